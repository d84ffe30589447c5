"""The whole pipeline against a real Redis on loopback, with a no-op handler (not a test).

    .venv/bin/python bench/bench_pipeline.py [REDIS_URL]     # default redis://127.0.0.1:6379/11
    .venv/bin/python bench/bench_pipeline.py --loop uvloop   # on uvloop (keyrouter[fast])
    .venv/bin/python bench/bench_pipeline.py --loop asyncio-ms   # asyncio's own selector
    .venv/bin/python bench/bench_pipeline.py --only b,e      # some of the figures only

(a) store round trips and time of a poll over 10,000 already-done messages;
(b) new messages per second through `Dispatcher.process` (claim, route, handler, done), with an
    `async def` and a plain no-op handler, next to a naive baseline measured in the same run (one
    store call per message for check, claim and done);
(c) Redis bytes per remembered id;
(d) one process, `async def` handlers awaiting 50 ms, concurrency 100 (ideal 2,000/s);
(e) `replay` (the streaming path) of 10 ms handlers at concurrency 100 (ideal 10,000/s), from rows:
    the file is read in parts while its first messages run, inside the measured time.
(b), (d) and (e) also print the CPU time of this process per message (`time.process_time`), a
figure that other load on the machine disturbs much less than the rates.
The default loop is the one keyrouter runs without the `fast` extra: asyncio's, with timer waits
to the microsecond (keyrouter/worker/eventloop.py); `asyncio-ms` is asyncio's loop as it comes,
whose waits are whole milliseconds.
Uses its own namespaces and deletes only their keys.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import redis.asyncio as aioredis

from keyrouter.dispatch import Dispatcher
from keyrouter.message import TURKEY, Message, parse_row
from keyrouter.rules.loader import load_rules
from keyrouter.rules.router import Router
from keyrouter.settings import Settings
from keyrouter.store.keys import Keys
from keyrouter.store.redis import RedisStore
from keyrouter.worker.eventloop import microsecond_loop
from keyrouter.worker.replay import replay
from keyrouter.worker.runtime import open_runtime
from keyrouter.worker.sources import SavedInbox

ROUNDS = 5
RULES = """
version: 1
rules:
  - {name: optout, keywords: [RET, IPTAL], handlers: [bench_pipeline:HANDLER]}
  - {name: survey, pattern: 'anket (?P<choice>[ab])', handlers: [bench_pipeline:HANDLER]}
default:
  handlers: [bench_pipeline:HANDLER]
"""


async def anoop(message: Any, match: Any, context: Any) -> None:
    return None


def noop(message: Any, match: Any, context: Any) -> None:
    return None


async def sleep50(message: Any, match: Any, context: Any) -> None:
    await asyncio.sleep(0.05)


#: when each (e) handler started (perf_counter), for the steady rate between ramp and tail
STARTS: list[float] = []


async def sleep10(message: Any, match: Any, context: Any) -> None:
    STARTS.append(time.perf_counter())
    await asyncio.sleep(0.01)


def steady_rate(starts: list[float], margin: float = 0.1) -> float:
    """Handler starts per second between the first and the last `margin` seconds of a run."""
    first, last = starts[0] + margin, starts[-1] - margin
    inside = [t for t in starts if first <= t <= last]
    return (len(inside) - 1) / (inside[-1] - inside[0]) if len(inside) > 1 else 0.0


class CountingConnection(aioredis.Connection):
    sent = 0

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        type(self).sent += 1
        await super().send_packed_command(*args, **kwargs)


def rows(n: int, prefix: str) -> list[dict[str, str]]:
    stamp = (datetime.now(TURKEY) - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    texts = ["RET", "İptal", "anket a", "ANKET B", "merhaba, bilgi alabilir miyim?"]
    return [{"id": f"{prefix}{i}", "date": stamp, "sender": f"+9055{i:08d}",
             "number": "+908505550000", "text": texts[i % 5]} for i in range(n)]


def messages(n: int, prefix: str) -> list[Message]:
    return [parse_row(row) for row in rows(n, prefix)]


def rules_file(handler: str) -> Path:
    path = Path(tempfile.mkdtemp()) / "rules.yaml"
    path.write_text(RULES.replace("HANDLER", handler))
    return path


def router_for(handler: str) -> Router:
    return Router(load_rules(rules_file(handler)))


async def cleanup(client: aioredis.Redis, namespace: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{Keys(namespace).prefix}*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start : start + 1000])


async def naive(client: aioredis.Redis, batch: list[Message], router: Router, ns: str) -> None:
    """Check, claim and mark done with one call each per message."""
    for m in batch:
        if await client.sismember(f"naive:{ns}:done", m.id):
            continue
        if not await client.set(f"naive:{ns}:claim:{m.id}", "w", nx=True, px=60_000):
            continue
        route = router.route(m.text, m.receiver)
        await anoop(m, route.match, None)
        await client.sadd(f"naive:{ns}:done", m.id)
        await client.delete(f"naive:{ns}:claim:{m.id}")


async def loop_ceiling(n: int, slots: int, seconds: float) -> float:
    """Messages/s of `slots` tasks doing nothing but `await asyncio.sleep(seconds)`, `n` times in
    all: what this event loop itself allows, no keyrouter involved (its timers wake in whole
    milliseconds, rounded up, so a 10 ms sleep takes a little longer)."""
    left = n

    async def slot() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await asyncio.sleep(seconds)

    start = time.perf_counter()
    await asyncio.gather(*(slot() for _ in range(slots)))
    return n / (time.perf_counter() - start)


def cpu_us(cpu: list[float], n: int) -> str:
    """The median CPU time of this process per message, in microseconds."""
    return f"{sorted(cpu)[len(cpu) // 2] / n * 1e6:.1f} µs CPU a message"


async def main(url: str, only: set[str]) -> None:
    pool = aioredis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    client = aioredis.Redis(connection_pool=pool)
    namespaces: list[str] = []

    def store() -> RedisStore:
        namespaces.append(f"bench-{uuid4().hex[:12]}")
        return RedisStore(client, namespaces[-1], None)

    try:
        if "a" in only:  # a poll over 10,000 done messages
            s = store()
            done = messages(10_000, "d")
            dispatcher = Dispatcher(router_for("anoop"), s, namespace=s.namespace)
            await dispatcher.process(done)
            CountingConnection.sent = 0
            start = time.perf_counter()
            report = await dispatcher.process(done)
            took = time.perf_counter() - start
            assert report.done == 0
            print(f"(a) poll over 10,000 done messages: {CountingConnection.sent} round trips, "
                  f"{took * 1000:.1f} ms")
        if "b" in only:
            await new_messages(client, store)
        if "d" in only:  # I/O-bound handlers: slots are refilled as soon as one frees (no waves)
            n = 3_000
            rates, cpu = [], []
            for round_ in range(3):
                s = store()
                dispatcher = Dispatcher(router_for("sleep50"), s, namespace=s.namespace,
                                        concurrency=100)
                batch = messages(n, f"s50-{round_}-")
                start, started_cpu = time.perf_counter(), time.process_time()
                report = await dispatcher.process(batch)
                rates.append(n / (time.perf_counter() - start))
                cpu.append(time.process_time() - started_cpu)
                assert report.done == n, report
                await cleanup(client, s.namespace)
            ceiling = sorted([await loop_ceiling(n, 100, 0.05) for _ in range(3)])[1]
            print(f"(d) async handlers awaiting 50 ms, concurrency 100: best {max(rates):,.0f} "
                  f"messages/s, median {sorted(rates)[1]:,.0f} (3 runs of {n:,}; ideal 2,000/s, "
                  f"this event loop's own ceiling {ceiling:,.0f}/s; {cpu_us(cpu, n)})")
        if "e" in only:  # replay streams a whole file: no chunk waits for its slowest message
            n = 10_000
            rates, cpu, steady = [], [], []
            # the handler runs in the module the rules name (imported again when this is __main__)
            starts = importlib.import_module("bench_pipeline").STARTS
            for round_ in range(3):
                starts.clear()
                namespaces.append(f"bench-{uuid4().hex[:12]}")
                settings = Settings(rules=str(rules_file("sleep10")), store=url,
                                    namespace=namespaces[-1], concurrency=100)
                async with open_runtime(settings) as runtime:
                    start, started_cpu = time.perf_counter(), time.process_time()
                    # the rows are read inside the measured time, as replay reads a file
                    inbox = SavedInbox(rows(n, f"r10-{round_}-"))
                    report, dead = await replay(runtime, inbox, asyncio.Event())
                    rates.append(n / (time.perf_counter() - start))
                    cpu.append(time.process_time() - started_cpu)
                assert report.done == n and not dead, report
                steady.append(steady_rate(sorted(starts)))
                await cleanup(client, namespaces[-1])
            ceiling = sorted([await loop_ceiling(n, 100, 0.01) for _ in range(3)])[1]
            print(f"(e) replay, 10 ms handlers, concurrency 100: best {max(rates):,.0f} messages/s, "
                  f"median {sorted(rates)[1]:,.0f} (3 runs of {n:,}; ideal 10,000/s, this event "
                  f"loop's own ceiling {ceiling:,.0f}/s; {cpu_us(cpu, n)}); handler starts "
                  f"between the first and last 0.1 s: median {sorted(steady)[1]:,.0f}/s")
        if "c" in only:  # bytes per remembered id
            s = store()
            ids = [f"{8_000_000_000 + i}" for i in range(100_000)]
            await s.finish(ids, "w")
            used = await client.memory_usage(Keys(s.namespace).done)
            print(f"(c) Redis bytes per remembered id (100,000 ids of 10 characters): "
                  f"{used / len(ids):.1f}")
    finally:
        for namespace in namespaces:
            await cleanup(client, namespace)
        await client.aclose()


async def new_messages(client: aioredis.Redis, store: Callable[[], RedisStore]) -> None:
    """(b) new messages per second: best and median of ROUNDS runs, each on a fresh namespace
    (this VM's figures swing by a third from run to run), then the naive baseline."""
    n = 20_000
    for handler in ("anoop", "noop"):
        rates, cpu = [], []
        for round_ in range(ROUNDS):
            s = store()
            dispatcher = Dispatcher(router_for(handler), s, namespace=s.namespace)
            batch = messages(n, f"{handler}{round_}-")
            CountingConnection.sent = 0
            start, started_cpu = time.perf_counter(), time.process_time()
            report = await dispatcher.process(batch)
            rates.append(n / (time.perf_counter() - start))
            cpu.append(time.process_time() - started_cpu)
            assert report.done == n, report
            await dispatcher.aclose()
            await cleanup(client, s.namespace)
        kind = "async def" if handler == "anoop" else "plain def"
        print(f"(b) {kind} no-op: best {max(rates):,.0f} messages/s, median "
              f"{sorted(rates)[len(rates) // 2]:,.0f} ({ROUNDS} runs of {n:,} messages, "
              f"{CountingConnection.sent} round trips each; {cpu_us(cpu, n)})")
    naive_n = 3_000
    naive_rates = []
    for round_ in range(ROUNDS):
        ns = f"bench-{uuid4().hex[:12]}"
        start = time.perf_counter()
        await naive(client, messages(naive_n, f"n{round_}-"), router_for("anoop"), ns)
        naive_rates.append(naive_n / (time.perf_counter() - start))
        await client.delete(f"naive:{ns}:done")
    print(f"(b) naive baseline (3 round trips a message): best {max(naive_rates):,.0f} messages/s, "
          f"median {sorted(naive_rates)[len(naive_rates) // 2]:,.0f}")


LOOPS = {"asyncio": "asyncio, timer waits to the microsecond (keyrouter without keyrouter[fast])",
         "asyncio-ms": "asyncio as it comes, timer waits in whole milliseconds",
         "uvloop": "uvloop (keyrouter[fast])"}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--loop", choices=tuple(LOOPS), default="asyncio",
                        help="the event loop: keyrouter's asyncio loop (the default), asyncio's "
                             "own (asyncio-ms), uvloop (keyrouter[fast])")
    parser.add_argument("--only", default="a,b,c,d,e", help="the figures to measure, e.g. b,e")
    args = parser.parse_args()
    factory = microsecond_loop if args.loop == "asyncio" else None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    print(f"event loop: {LOOPS[args.loop]}")
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(args.url, set(args.only.split(","))))


if __name__ == "__main__":
    cli()
