"""Is the Redis behind the store durable?  Without AOF persistence, or with a maxmemory policy that
evicts keys, lost done markers make the next poll repeat every handler (replies sent again).

`run` logs these warnings at start; `doctor` can show the same list.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from keyrouter.store.base import Store

logger = logging.getLogger("keyrouter.worker")


async def durability_warnings(store: Store) -> list[str]:
    """Warnings about the store's Redis (empty for other backends, and for a Redis that persists
    with AOF and never evicts).  Never raises: a check that cannot run says so instead."""
    client = getattr(store, "client", None)
    if client is None or not hasattr(client, "info"):
        return []
    warnings: list[str] = []
    try:
        aof = _values(await client.info("persistence"), "aof_enabled")
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return []  # unreachable: the worker says so itself, once, where it uses the store
    except Exception as exc:  # a check must not stop the worker
        return [f"could not ask Redis about persistence ({type(exc).__name__}: {exc}); Redis must "
                "persist with AOF (appendonly yes) and must not evict (maxmemory-policy noeviction)"]
    if not aof or any(str(v) not in ("1", "True") for v in aof):
        warnings.append("Redis does not persist with AOF (appendonly no): if it restarts, the done "
                        "markers since its last snapshot are lost and those messages' handlers run "
                        "again. Set `appendonly yes` (docs/operations.md, In production)")
    try:
        policy = _values(await client.config_get("maxmemory-policy"), "maxmemory-policy")
    except Exception as exc:  # managed Redis often refuses CONFIG
        warnings.append(f"could not read Redis's maxmemory-policy (CONFIG GET refused: "
                        f"{type(exc).__name__}); make sure it is `noeviction`, or evicted done "
                        "markers make handlers run again")
        return warnings
    evicting = sorted({str(v) for v in policy if str(v) != "noeviction"})
    if not policy or evicting:
        shown = ", ".join(evicting) or "unknown"
        warnings.append(f"Redis maxmemory-policy is {shown}, not noeviction: under memory "
                        "pressure it may drop done markers and leases, and handlers run again. "
                        "Set `maxmemory-policy noeviction` (docs/operations.md, In production)")
    return warnings


def _values(answer: Any, field: str) -> list[Any]:
    """A field of an INFO / CONFIG GET answer; a cluster client answers per node."""
    if not isinstance(answer, dict):
        return []
    if field in answer:
        found = [answer[field]]
    else:
        found = [v[field] for v in answer.values() if isinstance(v, dict) and field in v]
    return [v.decode() if isinstance(v, bytes) else v for v in found]


async def warn_if_not_durable(store: Store) -> list[str]:
    warnings = await durability_warnings(store)
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings
