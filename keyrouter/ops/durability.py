"""Is the Redis behind the store durable?  Without AOF persistence, or with a maxmemory policy that
evicts keys, lost done markers make the next poll repeat every handler (replies sent again).

`run` logs these warnings at start; `doctor` can show the same list.
"""

from __future__ import annotations

import logging

from keyrouter.store.roles import StoreInfo

logger = logging.getLogger("keyrouter.worker")


async def durability_warnings(store: StoreInfo) -> list[str]:
    """Warnings about the store's Redis (empty for other backends, and for a Redis that persists
    with AOF and never evicts).  Never raises: a check that cannot run says so instead."""
    health = await store.health()
    if not health.ok or not health.servers:
        return []  # unreachable: the worker says so itself, once, where it uses the store
    servers = health.servers
    refused = next((s.info_error for s in servers if s.info_error), "")
    if refused:
        return [f"could not ask Redis about persistence ({refused}); Redis must "
                "persist with AOF (appendonly yes) and must not evict (maxmemory-policy noeviction)"]
    warnings: list[str] = []
    if not all(s.aof for s in servers):
        warnings.append("Redis does not persist with AOF (appendonly no): if it restarts, the done "
                        "markers since its last snapshot are lost and those messages' handlers run "
                        "again. Set `appendonly yes` (docs/operations.md, In production)")
    config = next((s.config_error for s in servers if s.config_error), "")
    if config:  # managed Redis often refuses CONFIG
        warnings.append(f"could not read Redis's maxmemory-policy (CONFIG GET refused: "
                        f"{config}); make sure it is `noeviction`, or evicted done "
                        "markers make handlers run again")
        return warnings
    evicting = sorted({s.policy for s in servers if s.policy != "noeviction"})
    if evicting:
        warnings.append(f"Redis maxmemory-policy is {', '.join(evicting)}, not noeviction: under memory "
                        "pressure it may drop done markers and leases, and handlers run again. "
                        "Set `maxmemory-policy noeviction` (docs/operations.md, In production)")
    return warnings


async def warn_if_not_durable(store: StoreInfo) -> list[str]:
    warnings = await durability_warnings(store)
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings
