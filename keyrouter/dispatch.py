"""Messages -> handler effects, exactly once per namespace.

For a batch of messages (one poll, or a chunk of a replayed file):
1. drop duplicates and messages older than the horizon; ask the store which ids are unfinished
   (one round trip);
2. order them per sender (received time, then id) and cut them into *waves*, the k-th message of
   every sender in wave k, so one person's RET and a later BASLA are never applied out of order;
   a sender whose earlier message is not finished (failed, or held by another worker) waits;
3. per wave, claim every id in one round trip, route, then run the handler entries in *stages*:
   stage i runs entry i of every claimed message concurrently; after each stage, the successes are
   recorded and the messages whose last entry succeeded are finished (one round trip each);
4. a failed entry schedules a retry with backoff (entries that succeeded are not run again) or,
   after the last attempt or on a permanent error, dead-letters the message.

A crash at any point repeats at most the entries that were running, with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from keyrouter.client import PermanentApiError
from keyrouter.context import Context, idempotency_key
from keyrouter.events import NO_EVENTS, Events
from keyrouter.handlers import registry
from keyrouter.message import Message, mask_number
from keyrouter.retries import PermanentError, RetryPolicy
from keyrouter.router import Route, Router
from keyrouter.rules import HandlerEntry
from keyrouter.store.base import Claimed, Store

logger = logging.getLogger("keyrouter.dispatch")
DEFAULT_RULE = "default"
_NOT_STARTED = object()
ADMITTED = "!admitted"  # progress marker: the message passed its max_age check once
_ERROR_LIMIT = 2000


@dataclass
class Report:
    """What one `process()` call did, for logs, exit codes and tests."""

    seen: int = 0
    done: int = 0
    skipped: int = 0  # older than the rule's max_age
    retrying: int = 0  # failed, retry scheduled
    dead: int = 0
    # not this time: held by another worker, retry not due, or the sender's earlier message pending
    deferred: int = 0
    ignored: int = 0  # duplicates within the batch, or older than the horizon

    def add(self, other: Report) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(eq=False)
class _Job:
    message: Message
    route: Route
    claimed: Claimed
    remaining: list[tuple[int, HandlerEntry]]  # (index in the rule's handlers, entry)
    error: BaseException | None = None
    lost: bool = False
    started: bool = False  # this stage's entry began (a clean stop starts no new entry)


def entry_key(rule: str, index: int, entry: HandlerEntry) -> str:
    """Progress key of a handler entry: which entries of a message already succeeded."""
    return f"{rule}#{index}:{entry.name}"


def is_permanent(exc: BaseException) -> bool:
    """Retrying cannot help (AuthenticationRefused is not among these: new credentials can)."""
    return isinstance(exc, PermanentError | PermanentApiError)


def describe_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_LIMIT else text[: _ERROR_LIMIT - 1] + "…"


@dataclass
class Dispatcher:
    router: Router
    store: Store
    namespace: str = "default"
    client: Any = None  # keyrouter.client.IletiMerkezi, for built-ins
    settings: Any = None  # keyrouter.settings.Settings
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    lease: float = 60.0
    concurrency: int = 64
    batch_size: int = 1000
    handler_timeout: float = 300.0
    flush_interval: float = 0.1  # seconds between writes of successes while a stage runs
    horizon: timedelta | None = None
    threads: int = 16
    clock: Callable[[], float] = time.time
    stopping: asyncio.Event | None = None
    events: Events = NO_EVENTS
    owner: str = field(default_factory=lambda: secrets.token_hex(8))

    def __post_init__(self) -> None:
        self._handlers: dict[str, tuple[Callable[..., Any], bool]] = {}
        # ids this dispatcher is running: the store lets an owner re-claim its own lease, so
        # overlapping process() calls must not both take the same id
        self._running: set[str] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._loggers: dict[str, logging.Logger] = {}
        self.inflight = 0  # handler entries running now (metrics)
        self._waiting: dict[str, float] = {}  # unfinished ids offered -> received at (inbox lag)
        self._rule_of: dict[str, str] = {}  # claimed ids -> the rule they were routed to
        self._resolve_all(self.router)  # fail at start-up, not at the first message

    def _resolve_all(self, router: Router) -> None:
        for rule in router.rules.rules:
            for entry in rule.handlers:
                self._resolve(entry.name)
        for entry in router.rules.default:
            self._resolve(entry.name)

    def use_router(self, router: Router) -> None:
        """Hot reload: messages routed from now on use `router`; routed ones finish under theirs.
        Its handlers are resolved first, so a reload naming one that does not import fails here."""
        self._resolve_all(router)
        self.router = router

    def queued(self) -> dict[str, int]:
        """Messages offered and unfinished that are not running a handler now (metrics)."""
        return {"high": 0, "normal": max(0, len(self._waiting) - self.inflight)}

    def oldest_waiting_age(self, now: float) -> float | None:
        """Seconds since the oldest unfinished message offered to this dispatcher arrived."""
        oldest = min(self._waiting.values(), default=None)
        return None if oldest is None else max(0.0, now - oldest)

    def _resolve(self, name: str) -> tuple[Callable[..., Any], bool]:
        found = self._handlers.get(name)
        if found is None:
            func = registry.resolve(name)
            found = self._handlers[name] = (func, inspect.iscoroutinefunction(func))
        return found

    async def aclose(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _stopped(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()

    def beyond_horizon(self, message: Message) -> bool:
        """Older than the horizon: ignored before it reaches the store.  A message without a
        provider date is never beyond it (its done marker is kept for good instead)."""
        return (self.horizon is not None and message.date_known
                and message.received_at.timestamp() < self.clock() - self.horizon.total_seconds())

    # ------------------------------------------------------------------ batches and waves
    async def process(self, messages: Sequence[Message]) -> Report:
        report = Report(seen=len(messages))
        by_id: dict[str, Message] = {}
        for m in messages:
            if m.id in by_id or self.beyond_horizon(m):
                report.ignored += 1
                continue
            by_id[m.id] = m
        if not by_id:
            return report
        pending = [by_id[i] for i in await self.store.unfinished(list(by_id))]
        # every unfinished row comes with each call (a poll, or all shared rows): what is not
        # here was finished elsewhere
        self._waiting = {m.id: m.received_at.timestamp() for m in pending}
        pending.sort(key=lambda m: (m.received_at, m.id))
        waiting: set[str] = set()  # senders whose earlier message is not finished
        for wave in _waves(pending):
            if self._stopped():
                report.deferred += len(wave)
                continue
            ready = [m for m in wave if _sender_key(m) not in waiting]
            report.deferred += len(wave) - len(ready)
            for start in range(0, len(ready), self.batch_size):
                chunk = ready[start : start + self.batch_size]
                if self._stopped():
                    report.deferred += len(chunk)
                    continue
                unfinished = await self._process_wave(chunk, report)
                waiting.update(_sender_key(m) for m in unfinished)
        return report

    async def _process_wave(self, wave: list[Message], report: Report) -> list[Message]:
        """Claim and run one wave; returns the messages left unfinished."""
        wanted = [m.id for m in wave if m.id not in self._running]
        self._running.update(wanted)
        try:
            claims = await self.store.claim(wanted, self.owner, self.lease, self.clock())
            claimed_ids = {c.id: c for c in claims}
            taken = sum(1 for c in claims if getattr(c, "taken_over", False))
            if taken:
                self.events.lease_taken_over(taken)
            left = [m for m in wave if m.id not in claimed_ids]
            report.deferred += len(left)
            return left + await self._run_claimed(wave, claimed_ids, report)
        finally:
            self._running.difference_update(wanted)

    async def _run_claimed(self, wave: list[Message], claimed_ids: dict[str, Claimed],
                           report: Report) -> list[Message]:
        jobs: list[_Job] = []
        skipped: list[str] = []
        finished: list[str] = []
        undated = {m.id for m in wave if not m.date_known}
        now = datetime.fromtimestamp(self.clock(), UTC)
        for m in wave:
            claim = claimed_ids.get(m.id)
            if claim is None:
                continue
            route = self.router.route(m.text, m.receiver)
            message = m if m.normalized == route.normalized else replace(m, normalized=route.normalized)
            rule = route.rule
            # max_age decides once, at the first attempt: a retry (or a dead letter retried by
            # hand) of a message that was young enough is never skipped half-done
            first_time = claim.attempts == 0 and not claim.succeeded
            too_old = rule is not None and rule.max_age is not None and now - m.received_at > rule.max_age
            rule_name = rule.name if rule else DEFAULT_RULE
            self._rule_of[m.id] = rule_name
            if first_time and too_old:
                skipped.append(m.id)
                continue
            remaining = [(i, e) for i, e in enumerate(route.handlers)
                         if entry_key(rule_name, i, e) not in claim.succeeded]
            if remaining:
                jobs.append(_Job(message, route, claim, remaining))
            else:
                finished.append(m.id)  # nothing (left) to run: a crash after the last entry
        renewer = asyncio.create_task(self._renew_while_running(jobs)) if jobs else None
        try:
            return await self._run_stages(jobs, finished, skipped, undated, report)
        finally:
            if renewer is not None:
                renewer.cancel()

    async def _renew_while_running(self, jobs: list[_Job]) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            ids = {j.message.id for j in jobs if j.remaining and not j.lost and j.error is None}
            if not ids:
                continue
            try:
                held = set(await self.store.renew(list(ids), self.owner, self.lease))
            except Exception as exc:  # a blip must not end renewal: try again at the next tick
                logger.warning("could not renew leases (%s); retrying", describe_error(exc))
                continue
            for job in jobs:
                if job.message.id in ids and job.message.id not in held:
                    job.lost = True
                    logger.warning("lease lost for message %s; another worker may take it over",
                                   job.message.id)

    async def _run_stages(self, jobs: list[_Job], finished: list[str], skipped: list[str],
                          undated: set[str], report: Report) -> list[Message]:
        unfinished: list[Message] = []
        if finished or skipped:  # nothing to run for these: finish them before anything runs
            await self._finish(finished, skipped, undated, report)
        active = jobs
        while active:
            for job in active:
                job.started = False
            await self._run_all(active, undated, report)
            still: list[_Job] = []
            not_started: list[_Job] = []
            for job in active:
                if not job.started:
                    not_started.append(job)
                elif job.error is not None:
                    unfinished.append(job.message)
                    await self._failed(job, report)
                elif job.remaining and not job.lost:
                    still.append(job)
            active = still
            if self._stopped():  # a clean stop: what started has finished; give the rest back
                rest = not_started + active
                if rest:
                    await self.store.release([j.message.id for j in rest], self.owner)
                    report.deferred += len(rest)
                return unfinished + [j.message for j in rest]
        return unfinished

    async def _record(self, completed: list[_Job], undated: set[str], report: Report) -> None:
        """Write down entries that returned: progress for messages with entries left, done for
        the others.  Called during a stage too, so a slow handler does not keep its batch mates'
        successes unwritten (a kill would repeat them)."""
        successes: list[tuple[str, str]] = []
        finished: list[str] = []
        by_id: dict[str, _Job] = {}
        for job in completed:
            index, entry = job.remaining.pop(0)
            if job.remaining:
                successes.append((job.message.id, entry_key(self._rule_name(job), index, entry)))
                by_id[job.message.id] = job
            else:
                finished.append(job.message.id)
        if successes:
            for lost in set(await self.store.record_success(successes, self.owner)):
                logger.warning("lease lost for message %s; stopping its handlers here", lost)
                by_id[lost].lost = True
        if finished:
            await self._finish(finished, [], undated, report)

    async def _finish(self, finished: list[str], skipped: list[str], undated: set[str],
                      report: Report) -> None:
        forever = [i for i in (*finished, *skipped) if i in undated] if undated else []
        taken = await self.store.finish(finished, self.owner, skipped=skipped, forever=forever)
        for lost in taken or ():
            logger.warning("message %s was taken over by another worker before it was marked "
                           "done; its last handler entry may run again", lost)
        report.done += len(finished) - len(taken or ())
        report.skipped += len(skipped)
        lost = set(taken or ())
        for outcome, ids in (("done", finished), ("skipped", skipped)):
            for i in ids:
                self._waiting.pop(i, None)
                rule = self._rule_of.pop(i, DEFAULT_RULE)
                if i not in lost:
                    self.events.message_finished(rule, outcome)

    def _rule_name(self, job: _Job) -> str:
        return job.route.rule.name if job.route.rule else DEFAULT_RULE

    # ------------------------------------------------------------------ one handler entry
    async def _run_all(self, jobs: list[_Job], undated: set[str], report: Report) -> None:
        """The next entry of every job, at most `concurrency` at once: a few runner tasks take
        jobs from one list (cheaper than a task and a semaphore wait per job).  Entries that
        returned are recorded every `flush_interval` while others still run, then at the end."""
        todo = iter(jobs)
        completed: list[_Job] = []
        stage_over = asyncio.Event()

        async def runner() -> None:
            for job in todo:
                if self._stopped():
                    return
                job.started = True
                await self._run_next(job)
                if job.started and job.error is None:
                    completed.append(job)

        async def flusher() -> None:
            while not stage_over.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stage_over.wait(), self.flush_interval)
                if completed and not stage_over.is_set():
                    batch = completed[:]
                    del completed[:]
                    await self._record(batch, undated, report)

        runners = min(self.concurrency, len(jobs))
        flushing = asyncio.create_task(flusher())
        try:
            if runners == 1:
                await runner()
            else:
                await asyncio.gather(*(runner() for _ in range(runners)))
        finally:
            stage_over.set()
            await flushing  # never cut a store write in half
        if completed:
            await self._record(completed, undated, report)

    async def _run_next(self, job: _Job) -> None:
        index, entry = job.remaining[0]
        rule_name = self._rule_name(job)
        func, is_async = self._resolve(entry.name)
        attempt = job.claimed.attempts + 1
        fields = {"message_id": job.message.id, "rule": rule_name, "handler": entry.name,
                  "attempt": attempt}
        context = Context(
            params=entry.params,
            idempotency_key=idempotency_key(self.namespace, job.message.id, rule_name, index, entry.name),
            logger=logging.LoggerAdapter(self._logger(entry.name), fields),
            rule=rule_name,
            attempt=attempt,
            client=self.client,
            store=self.store,
            settings=self.settings,
            events=self.events,
        )
        self.inflight += 1
        started = time.monotonic()
        try:
            if is_async:
                async with asyncio.timeout(entry.timeout or self.handler_timeout):
                    await func(job.message, job.route.match, context)
            else:
                await self._run_in_thread(func, job, context, entry.name)
        except Exception as exc:
            job.error = exc
        finally:
            self.inflight -= 1
        if job.started:
            self.events.handler_finished(entry.name, time.monotonic() - started, job.error is None)

    def _call_unless_stopped(self, func: Callable[..., Any], *args: Any) -> Any:
        """Runs in the pool thread: a call still queued when a stop arrives never starts."""
        if self._stopped():
            return _NOT_STARTED
        return func(*args)

    async def _run_in_thread(self, func: Callable[..., Any], job: _Job, context: Context,
                             name: str) -> None:
        """A thread cannot be cancelled: past the time limit the entry counts as failed, but
        only once the thread has returned, so a retry never overlaps it (the lease is renewed
        meanwhile)."""
        call = self._in_thread(self._call_unless_stopped, func, job.message, job.route.match, context)
        try:
            async with asyncio.timeout(self.handler_timeout):
                result = await asyncio.shield(call)
        except TimeoutError:
            logger.error("handler %s passed its %.0fs time limit on message %s; waiting for its "
                         "thread to return", name, self.handler_timeout, job.message.id)
            await call
            raise TimeoutError(f"handler {name} ran longer than {self.handler_timeout:.0f}s") from None
        if result is _NOT_STARTED:
            job.started = False
        elif inspect.isawaitable(result):
            async with asyncio.timeout(self.handler_timeout):
                await result

    def _logger(self, handler: str) -> logging.Logger:
        found = self._loggers.get(handler)
        if found is None:
            found = self._loggers[handler] = logging.getLogger(f"keyrouter.handler.{handler}")
        return found

    def _in_thread(self, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="keyrouter-handler")
        return asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def _failed(self, job: _Job, report: Report) -> None:
        exc = job.error
        assert exc is not None
        failures = job.claimed.attempts + 1
        error = describe_error(exc)
        index, entry = job.remaining[0]
        where = f"message {job.message.id} from {mask_number(job.message.sender)}, " \
                f"rule {self._rule_name(job)}, handler #{index} {entry.name}"
        if is_permanent(exc) or self.policy.exhausted(failures):
            permanent = is_permanent(exc)
            why = "permanent error" if permanent else f"attempt {failures} of {self.policy.max_attempts}"
            # a retry by hand must not meet max_age again: mark the message admitted
            await self.store.record_success([(job.message.id, ADMITTED)], self.owner)
            if await self.store.dead_letter(job.message.id, self.owner, error, rule=self._rule_name(job),
                                            row=dict(job.message.row), now=self.clock()) is False:
                logger.warning("%s: another worker holds it now; leaving it to them", where)
                return
            logger.error("dead letter: %s (%s): %s", where, why, error, extra=self._fields(job))
            report.dead += 1
            self._waiting.pop(job.message.id, None)
            self.events.message_finished(self._rule_of.pop(job.message.id, DEFAULT_RULE), "dead")
            return
        asked = float(getattr(exc, "retry_after", None) or 0)  # RetryLater, e.g. a webhook's Retry-After
        delay = max(self.policy.delay(failures), min(asked, self.policy.max_delay))
        logger.warning("retry in %.0fs: %s (attempt %d of %d): %s", delay, where, failures,
                       self.policy.max_attempts, error, extra=self._fields(job))
        if await self.store.fail(job.message.id, self.owner, error, self.clock() + delay) == -1:
            logger.warning("%s: another worker holds it now; leaving it to them", where)
            return
        report.retrying += 1
        self.events.message_finished(self._rule_of.pop(job.message.id, DEFAULT_RULE), "retrying")

    def _fields(self, job: _Job) -> dict[str, Any]:
        """Structured log fields (JSON logs): never the number or the text."""
        return {"message_id": job.message.id, "rule": self._rule_name(job),
                "handler": job.remaining[0][1].name, "attempt": job.claimed.attempts + 1}


def _sender_key(message: Message) -> str:
    return message.sender_e164 or message.sender or f"\x00{message.id}"


def _waves(messages: list[Message]) -> list[list[Message]]:
    """The k-th message of every sender goes in wave k (messages already in order)."""
    waves: list[list[Message]] = []
    seen: dict[str, int] = {}
    for m in messages:
        k = seen.get(key := _sender_key(m), 0)
        seen[key] = k + 1
        if k == len(waves):
            waves.append([])
        waves[k].append(m)
    return waves
