"""`replay` reads a saved inbox a part at a time while the first messages run: each sender's rows
(and each repeated id's) stay in one part, so order and duplicates are what they would be with the
whole file offered at once (docs/design.md, "Replay")."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import recording
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_dbs import E2E_URL, delete_namespace

from keyrouter.cli import main
from keyrouter.message import TURKEY, Message, row_id, row_sender, to_e164
from keyrouter.settings import Settings
from keyrouter.store import open_store
from keyrouter.worker import replay as replay_module
from keyrouter.worker import sources
from keyrouter.worker.replay import replay
from keyrouter.worker.runtime import open_runtime
from keyrouter.worker.sources import FIRST_PART, PART, SavedInbox

#: spellings of two numbers, a brand name and no sender at all
SENDERS = ["05321234567", "+905321234567", "90 532 123 45 67", "5321234567", "+905339998877",
           "0533 999 88 77", "ILTMRKZ", "", "  ILTMRKZ "]


def line_of(row: dict[str, Any]) -> str:
    sender = row_sender(row)
    return to_e164(sender) or sender


rows_strategy = st.lists(
    st.fixed_dictionaries({"sender": st.sampled_from(SENDERS), "text": st.sampled_from(["RET", "A"])}),
    max_size=60)


def parts_of(inbox: SavedInbox) -> list[list[str]]:
    """The ids of each part the inbox gives, read outside an event loop."""
    async def read() -> list[list[str]]:
        return [[m.id for m in part] async for part in inbox.parts()]
    return asyncio.run(read())


@settings(max_examples=200, deadline=None)
@given(rows=rows_strategy, part=st.integers(1, 7), first=st.integers(1, 9))
def test_a_senders_rows_share_one_part_in_file_order(rows: list[dict[str, Any]], part: int,
                                                     first: int) -> None:
    for n, row in enumerate(rows):
        row["id"] = str(n)
    inbox = SavedInbox(rows, part=part, first=first)
    parts = list(inbox._parts)
    assert sorted(id(r) for p in parts for r in p) == sorted(id(r) for r in rows)
    home: dict[str, int] = {}
    for index, rows_of_part in enumerate(parts):
        positions = [int(r["id"]) for r in rows_of_part]
        assert positions == sorted(positions)  # file order within a part
        for row in rows_of_part:
            assert home.setdefault(line_of(row), index) == index, "a sender split over two parts"
    assert inbox.ids == [row_id(r) for r in rows]
    assert parts_of(inbox) == [[str(r["id"]) for r in p] for p in parts]


def test_parts_start_at_every_part_rows_of_the_file_after_a_first_part() -> None:
    rows = [{"id": str(n), "sender": f"+9053200000{n:02d}", "text": "RET"} for n in range(25)]
    assert [len(p) for p in parts_of(SavedInbox(rows, part=10))] == [10, 10, 5]
    assert [len(p) for p in parts_of(SavedInbox(rows, part=10, first=4))] == [4, 10, 10, 1]
    many = [{"id": str(n), "sender": f"+90532{n:07d}", "text": "RET"} for n in range(2_500)]
    assert [len(p) for p in parts_of(SavedInbox(many))] == [FIRST_PART, PART, PART,
                                                            2_500 - FIRST_PART - 2 * PART]


def test_a_repeated_id_makes_the_file_one_part() -> None:
    rows = [{"id": str(n % 15), "sender": f"+9053200000{n:02d}", "text": "RET"} for n in range(30)]
    inbox = SavedInbox(rows, part=10)
    assert [len(p) for p in parts_of(inbox)] == [30]
    assert inbox.total == 30 and len(set(inbox.ids)) == 15


def test_rows_that_are_not_objects_are_left_for_parsing_to_skip(caplog: pytest.LogCaptureFixture) -> None:
    rows: list[Any] = [{"id": "1", "sender": "+905321234567", "text": "RET"}, "not a row", 7,
                       {"sender": "+905321234567", "text": "İPTAL"}]
    inbox = SavedInbox(rows, part=2)
    assert inbox.total == 2 and inbox.ids[0] == "1" and inbox.ids[1].startswith("h-")
    assert [m.id for m in inbox.messages()] == inbox.ids
    assert caplog.text.count("skipping a row") == 2


@pytest.mark.anyio
async def test_messages_parses_the_parts_not_read_yet() -> None:
    rows = [{"id": str(n), "sender": f"+9053200000{n:02d}", "text": "RET"} for n in range(25)]
    inbox = SavedInbox(rows, part=10)
    parts = inbox.parts()
    assert [m.id for m in await anext(parts)] == [str(n) for n in range(10)]
    assert [m.id for m in inbox.messages()] == [str(n) for n in range(25)]
    assert [p async for p in parts] == []  # messages() read the rest: nothing is offered twice


@pytest.mark.anyio
async def test_a_part_is_parsed_a_slice_at_a_time_with_the_loop_turning_between(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A part of 6 rows in slices of 2: another task runs twice before the part is given."""
    monkeypatch.setattr(sources, "SLICE", 2)
    rows = [{"id": str(n), "sender": f"+9053200000{n:02d}", "text": "RET"} for n in range(6)]
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    beside = asyncio.create_task(other())
    await asyncio.sleep(0)
    before = turns
    part = await anext(SavedInbox(rows, part=6).parts())
    beside.cancel()
    assert [m.id for m in part] == [str(n) for n in range(6)] and turns - before >= 2


@pytest.mark.anyio
async def test_messages_called_while_a_part_is_parsed_gives_that_part_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "SLICE", 2)
    rows = [{"id": str(n), "sender": f"+9053200000{n:02d}", "text": "RET"} for n in range(6)]
    inbox = SavedInbox(rows, part=6)
    reading = asyncio.create_task(anext(inbox.parts()))
    await asyncio.sleep(0)  # the first slice is parsed; the part is not given yet
    assert [m.id for m in inbox.messages()] == [str(n) for n in range(6)]
    with pytest.raises(StopAsyncIteration):
        await reading
    assert [m.id for m in inbox.messages()] == [str(n) for n in range(6)]


# ---------------------------------------------------------------------------- through replay
@pytest.fixture
def namespace() -> Any:
    name = f"test-replay-{uuid4().hex[:10]}"
    yield name
    assert delete_namespace(E2E_URL, name) == 0


def runtime_settings(write_rules: Callable[..., Path], namespace: str, handler: str) -> Settings:
    rules = write_rules(f"""
        version: 1
        rules:
          - {{name: all, pattern: '.*', handlers: [{handler}]}}
        """)
    return Settings(rules=str(rules), store=E2E_URL, namespace=namespace, concurrency=20)


def dated(n: int, sender: str, minute: int, text: str = "RET") -> dict[str, Any]:
    when = datetime.now(TURKEY).replace(microsecond=0) - timedelta(hours=1) + timedelta(minutes=minute)
    return {"id": f"r{n}", "date": when.strftime("%Y-%m-%d %H:%M:%S"), "sender": sender,
            "number": "+908505550000", "text": text}


class Noting(SavedInbox):
    """A saved inbox of parts of 10 rows that calls `note()` as it gives each part and keeps
    what it returns, in `notes`."""

    def __init__(self, rows: list[dict[str, Any]], note: Callable[[], Any]) -> None:
        super().__init__(rows, part=10)
        self.note, self.notes = note, list[Any]()

    async def parts(self) -> AsyncIterator[list[Message]]:
        async for part in super().parts():
            self.notes.append(self.note())
            yield part


@pytest.mark.anyio
async def test_the_first_messages_run_before_the_file_is_read(
        write_rules: Callable[..., Path], namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Redis: with parts of 10 rows and the next part read once fewer than 15 wait, the
    second part is read once messages of the first run (FIRST_START long enough never to end
    the wait here), handlers have started when the last part is parsed, and every message of the
    file ran once."""
    monkeypatch.setattr(replay_module, "WAITING_LOW", 15)
    monkeypatch.setattr(replay_module, "FIRST_START", 30.0)
    rows = [dated(n, f"+9053200{n:05d}", n % 50) for n in range(120)]
    # messages in slots, and handlers started, when each part was given
    inbox = Noting(rows, lambda: (runtime.dispatcher.inflight, len(recording.STARTED)))
    settings_ = runtime_settings(write_rules, namespace, "{recording:slow: {seconds: 0.02}}")
    async with open_runtime(settings_) as runtime:
        report, dead = await replay(runtime, inbox, asyncio.Event())
    running_when_parsed = [running for running, _ in inbox.notes]
    started_when_parsed = [started for _, started in inbox.notes]
    assert len(started_when_parsed) == 12
    assert running_when_parsed[0] == 0 and running_when_parsed[1] > 0
    assert started_when_parsed[0] == 0 and started_when_parsed[-1] > 0
    assert report.done == 120 and dead == []
    assert sorted(c["id"] for c in recording.CALLS) == sorted(f"r{n}" for n in range(120))


@pytest.mark.anyio
async def test_a_first_part_held_by_another_worker_does_not_hold_up_the_reading(
        write_rules: Callable[..., Path], namespace: str) -> None:
    """Real Redis: the first part's messages are claimed by another worker for a second: the
    second part is read at once and runs; the first part runs once the other's lease is over."""
    inbox = Noting([dated(n, f"+9053200{n:05d}", n % 50) for n in range(30)], time.monotonic)
    settings_ = runtime_settings(write_rules, namespace, "recording:arecord")
    async with open_runtime(settings_) as runtime:
        assert len(await runtime.store.claim(inbox.ids[:10], "another-worker", 1.0, time.time())) == 10
        _, dead = await replay(runtime, inbox, asyncio.Event())
        assert await runtime.store.unfinished(inbox.ids) == [] and dead == []
    assert inbox.notes[1] - inbox.notes[0] < 0.5
    ran = [c["id"] for c in recording.CALLS]
    assert sorted(ran) == sorted(inbox.ids) and set(ran[:20]) == set(inbox.ids[10:])


@pytest.mark.anyio
async def test_a_first_part_that_is_slow_to_start_is_waited_for_only_so_long(
        write_rules: Callable[..., Path], namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Redis: the store's first answer takes 0.4 s: the second part is read FIRST_START after
    the first, without waiting for it."""
    inbox = Noting([dated(n, f"+9053200{n:05d}", n % 50) for n in range(30)], time.monotonic)
    settings_ = runtime_settings(write_rules, namespace, "recording:arecord")
    async with open_runtime(settings_) as runtime:
        store, unfinished = runtime.store, runtime.store.unfinished
        answers = 0

        async def slow_first(ids: Any) -> list[str]:
            nonlocal answers
            answers += 1
            if answers == 1:
                await asyncio.sleep(0.4)
            return await unfinished(ids)

        monkeypatch.setattr(store, "unfinished", slow_first)
        report, _ = await replay(runtime, inbox, asyncio.Event())
    assert replay_module.FIRST_START <= inbox.notes[1] - inbox.notes[0] < 0.3
    assert report.done == 30


@pytest.mark.anyio
async def test_a_senders_messages_run_in_date_order_though_the_file_is_read_in_parts(
        write_rules: Callable[..., Path], namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Redis: one sender's rows spread over the whole file, newest first, among 150 others:
    they run one after another, oldest first, as they would with the file offered at once."""
    monkeypatch.setattr(replay_module, "WAITING_LOW", 15)
    rows = [dated(n, f"+9053200{n:05d}", n % 50) for n in range(150)]
    for k, n in enumerate(range(149, 0, -30)):  # positions 149, 119, ..., 29: dates 0, 1, ...
        rows[n] = dated(n, "0532 111 22 33" if k % 2 else "+905321112233", k)
    inbox = SavedInbox(rows, part=10)
    settings_ = runtime_settings(write_rules, namespace, "recording:arecord")
    async with open_runtime(settings_) as runtime:
        report, _ = await replay(runtime, inbox, asyncio.Event())
    assert report.done == 150
    ours = [c["id"] for c in recording.CALLS if c["id"] in {f"r{n}" for n in range(149, 0, -30)}]
    assert ours == [f"r{n}" for n in range(149, 0, -30)]  # oldest (the last row) first


@pytest.mark.anyio
async def test_a_stop_while_the_file_is_read_offers_no_more_parts(
        write_rules: Callable[..., Path], namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Redis: a stop after the first handler started: the parts not offered yet never run,
    and the messages of the file are all parsed for the report."""
    monkeypatch.setattr(replay_module, "WAITING_LOW", 15)
    rows = [dated(n, f"+9053200{n:05d}", n % 50) for n in range(200)]
    inbox = SavedInbox(rows, part=10)
    stopping = asyncio.Event()
    settings_ = runtime_settings(write_rules, namespace, "{recording:slow: {seconds: 0.05}}")
    async with open_runtime(settings_, stopping=stopping) as runtime:
        async def stop_soon() -> None:
            while not recording.STARTED:
                await asyncio.sleep(0.005)
            stopping.set()
        stopper = asyncio.create_task(stop_soon())
        report, _ = await replay(runtime, inbox, stopping)
        await stopper
        left = set(await runtime.store.unfinished(inbox.ids))
    assert len(inbox.messages()) == 200
    assert report.done < 200 and len(left) == 200 - report.done
    assert len(recording.STARTED) <= 60  # the first parts only (20 slots, 15 waiting, 10 a part)


@pytest.mark.anyio
async def test_progress_counts_up_over_every_part_to_the_files_total(
        write_rules: Callable[..., Path], namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Redis: what the progress bar hears sums the parts: never down, never past the total,
    and ends at (total, total)."""
    monkeypatch.setattr(replay_module, "WAITING_LOW", 15)
    monkeypatch.setattr(replay_module, "PROGRESS_EVERY", 0.0)
    rows = [dated(n, f"+9053200{n:05d}", n % 50) for n in range(90)]
    heard: list[tuple[int, int]] = []
    settings_ = runtime_settings(write_rules, namespace, "recording:arecord")
    async with open_runtime(settings_) as runtime:
        report, _ = await replay(runtime, SavedInbox(rows, part=10), asyncio.Event(),
                                 lambda done, total: heard.append((done, total)))
    assert report.done == 90
    assert {total for _, total in heard} == {90}
    counts = [done for done, _ in heard]
    assert counts == sorted(counts) and counts[-1] == 90 and len(counts) >= 9


def test_the_summary_counts_messages_another_worker_held_and_finished(
        write_rules: Callable[..., Path], namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Real Redis: three of five messages are held by another worker, which finishes them while
    `keyrouter replay` waits: the summary counts all five done."""
    rows = [dated(n, f"+9053200{n:05d}", n) for n in range(5)]
    (tmp_path / "inbox.json").write_text(json.dumps(rows), encoding="utf-8")
    rules = write_rules("""
        version: 1
        rules:
          - {name: all, pattern: '.*', handlers: [recording:arecord]}
        """)
    monkeypatch.setenv("KEYROUTER_NAMESPACE", namespace)
    held = ["r0", "r2", "r4"]

    async def other_worker(step: str) -> None:
        async with open_store(E2E_URL, namespace) as store:
            if step == "claim":
                assert len(await store.claim(held, "another-worker", 30.0, time.time())) == 3
            else:
                await store.finish(held, "another-worker")

    asyncio.run(other_worker("claim"))

    def finish_when_the_others_ran() -> None:  # beside the CLI, which wants the main thread
        deadline = time.monotonic() + 30
        while len(recording.CALLS) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        asyncio.run(other_worker("finish"))

    beside = threading.Thread(target=finish_when_the_others_ran)
    beside.start()
    code = main(["replay", str(tmp_path / "inbox.json"), "--rules", str(rules), "--store", E2E_URL])
    beside.join(30)
    assert code == 0
    assert sorted(c["id"] for c in recording.CALLS) == ["r1", "r3"]
    assert "5 messages: 5 done, 0 skipped, 0 in dead letters\n" in capsys.readouterr().out


def test_the_summary_counts_a_retry_that_ran_while_no_pass_waited(
        write_rules: Callable[..., Path], namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Real Redis: the first message fails once and is retried 50 ms later, while the first pass
    still runs the others: the summary counts it done (the pass heard only "retrying")."""
    rows = [dated(n, f"+9053200{n:05d}", n % 50) for n in range(60)]
    (tmp_path / "inbox.json").write_text(json.dumps(rows), encoding="utf-8")
    rules = write_rules("""
        version: 1
        rules:
          - {name: all, pattern: '.*', handlers: [{recording:slow: {seconds: 0.05, tag: s}}]}
        """)
    monkeypatch.setenv("KEYROUTER_NAMESPACE", namespace)
    monkeypatch.setenv("KEYROUTER_RETRY_BASE", "0.05")
    monkeypatch.setenv("KEYROUTER_CONCURRENCY", "5")
    recording.FAILS[("r0", "s")] = 1
    assert main(["replay", str(tmp_path / "inbox.json"), "--rules", str(rules),
                 "--store", E2E_URL]) == 0
    assert sorted(c["id"] for c in recording.CALLS) == sorted(f"r{n}" for n in range(60))
    assert "60 messages: 60 done, 0 skipped, 0 in dead letters\n" in capsys.readouterr().out
