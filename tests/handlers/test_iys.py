"""The `iys` handler against the fake İYS over real HTTP, with the ledger in a real store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from keyrouter.handlers.iys import consent_date, handle, params_problem
from keyrouter.message import TURKEY, Message, to_e164
from keyrouter.providers import iys
from keyrouter.retries import PermanentError
from keyrouter.settings import Settings
from keyrouter.store.base import OptOut
from keyrouter.store.memory import MemoryStore
from keyrouter.store.sqlite import SqliteStore
from keyrouter.testing import FakeIys

from .support import NUMBER, match

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake_iys() -> Iterator[FakeIys]:
    with FakeIys() as server:
        yield server


@pytest.fixture
async def settings(fake_iys: FakeIys) -> AsyncIterator[Settings]:
    yield Settings.model_validate({**fake_iys.settings(), "retry_max": 1.0})
    await iys.close_shared()


def message(id: str = "m-1", *, sender: str = NUMBER, date: str | None = "2026-11-27 14:05:09",
            received_at: datetime | None = None) -> Message:
    row: dict[str, Any] = {"id": id, "sender": sender, "text": "RET"}
    if date is not None:
        row["date"] = date
    text = date or "2026-11-27 14:05:09"
    when = received_at or datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=TURKEY)
    return Message(id=id, received_at=when, sender=sender, sender_e164=to_e164(sender), receiver="7889",
                   text="RET", normalized="ret", row=row)


def consents(fake: FakeIys) -> list[dict]:
    return [r.body for r in fake.requests if r.endpoint == "consents"]


async def test_the_record_field_by_field_and_the_ledger_line(fake_iys, settings, make_context) -> None:
    store = MemoryStore()
    fake_iys.add_record(NUMBER, "ONAY")
    await handle(message(), match(keyword="RET"), make_context(store=store, settings=settings))
    [body] = consents(fake_iys)
    assert body["recipient"] == NUMBER
    assert body["type"] == "MESAJ"
    assert body["source"] == "HS_MESAJ"
    assert body["status"] == "RET"
    assert body["consentDate"] == "2026-11-27 14:05:09"  # the provider's own string
    assert body["recipientType"] == "BIREYSEL"
    assert set(body) == {"recipient", "type", "source", "status", "consentDate", "recipientType"}
    [line] = await store.optouts()
    assert line.action == "iys_ret" and line.outcome == "recorded" and line.keyword == "RET"
    assert line.transaction_id == fake_iys.records[-1]["transactionId"]
    assert line.received_at == message().received_at.timestamp() and line.handled_at >= line.received_at
    assert await store.pending_optouts() == []


def test_consent_date_is_turkey_time() -> None:
    utc = datetime(2026, 12, 31, 22, 30, 5, tzinfo=UTC)  # already 1 January in Turkey
    assert consent_date(message(date=None, received_at=utc)) == "2027-01-01 01:30:05"
    # A provider string in another shape is not copied: the parsed moment is written instead.
    odd = message(date="2026-11-27T14:05", received_at=datetime(2026, 11, 27, 14, 5, tzinfo=TURKEY))
    assert consent_date(odd) == "2026-11-27 14:05:00"


async def test_onay_and_tacir_params(fake_iys, settings, make_context) -> None:
    store = MemoryStore()
    morning = message(date=None, received_at=datetime(2026, 3, 1, 7, 0, tzinfo=UTC))
    params = {"status": "ONAY", "recipient_type": "TACIR"}
    await handle(morning, match(keyword="BASLA"), make_context(params, store=store, settings=settings))
    [body] = consents(fake_iys)
    assert body["status"] == "ONAY" and body["recipientType"] == "TACIR"
    assert body["consentDate"] == "2026-03-01 10:00:00"
    [line] = await store.optouts()
    assert line.action == "iys_onay" and line.outcome == "recorded"


async def test_ret_with_no_record_is_noted_as_nothing_to_withdraw(fake_iys, settings, make_context) -> None:
    store = MemoryStore()
    await handle(message(), match(), make_context(store=store, settings=settings))
    [line] = await store.optouts()
    assert line.outcome == "nothing_to_withdraw" and line.transaction_id is None
    assert fake_iys.records == []


async def test_a_short_code_sender_is_a_dead_letter_with_no_call(
    fake_iys, settings, make_context
) -> None:
    with pytest.raises(PermanentError, match="not a mobile number"):
        await handle(message(sender="7889"), match(), make_context(store=MemoryStore(), settings=settings))
    assert fake_iys.requests == []


async def test_unconfigured_is_permanent(make_context) -> None:
    with pytest.raises(PermanentError, match="IYS_USERNAME"):
        await handle(message(), match(), make_context(settings=Settings()))


def test_params() -> None:
    assert params_problem({}) is None
    assert params_problem({"status": "ONAY", "recipientType": "TACIR"}) is None
    assert "RET (opt-out) or ONAY" in (params_problem({"status": "RED"}) or "")
    assert "BIREYSEL or TACIR" in (params_problem({"recipient_type": "bireysel"}) or "")
    assert "not both" in (params_problem({"recipient_type": "TACIR", "recipientType": "TACIR"}) or "")
    assert params_problem({"source": "HS_WEB"}) is None  # opt-outs found on the blacklist alone
    assert "one of İYS's sources" in (params_problem({"source": "WEB"}) or "")


async def test_an_older_message_changes_nothing(fake_iys, settings, make_context) -> None:
    store = MemoryStore()
    when = datetime(2026, 11, 28, tzinfo=TURKEY).timestamp()
    later = OptOut(NUMBER, "unblacklist", "m-9", "BASLA", when, 1.0)
    await store.record_optout(later)
    await handle(message(), match(), make_context(store=store, settings=settings))
    assert fake_iys.requests == [] and await store.optouts() == [later]


class Killed(BaseException):
    """The process dies between İYS's answer and the ledger write."""


class DiesOnLedger(SqliteStore):
    async def record_optout(self, entry: OptOut) -> None:
        raise Killed


async def test_a_repeat_after_a_kill_costs_no_second_record(
    fake_iys, settings, make_context, tmp_path: Path
) -> None:
    fake_iys.add_record(NUMBER, "ONAY")
    path = tmp_path / "ledger.sqlite3"
    async with DiesOnLedger(path, "ns") as dying:
        with pytest.raises(Killed):
            await handle(message(), match(), make_context(store=dying, settings=settings))
    assert len(fake_iys.records) == 2  # İYS recorded the RET, the ledger never heard of it
    async with SqliteStore(path, "ns") as store:  # the next process, the same message again
        [pending] = await store.pending_optouts()
        assert pending.action == "iys_ret" and pending.message_id == "m-1"
        await handle(message(), match(), make_context(store=store, settings=settings))
        [line] = await store.optouts()
        assert line.outcome == "already" and await store.pending_optouts() == []
    assert len(fake_iys.records) == 2 and len(consents(fake_iys)) == 1


async def test_secrets_stay_out_of_logs_and_errors(fake_iys, make_context, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    good = Settings.model_validate({**fake_iys.settings(), "retry_max": 1.0})
    fake_iys.add_record(NUMBER, "ONAY")
    fake_iys.fail_next("consents", "expired")
    await handle(message(), match(), make_context(store=MemoryStore(), settings=good))
    bad = Settings.model_validate({**fake_iys.settings(), "iys_password": "Wr0ng-s3cret"})
    with pytest.raises(PermanentError) as caught:
        await handle(message("m-2"), match(), make_context(store=MemoryStore(), settings=bad))
    await iys.close_shared()
    tokens = [r.authorization[7:] for r in fake_iys.requests if r.authorization]
    assert tokens
    shown = caplog.text + str(caught.value) + repr(caught.value) + repr(good) + repr(bad)
    for secret in [fake_iys.password, "Wr0ng-s3cret", *tokens]:
        assert secret not in shown
    assert NUMBER not in caplog.text  # masked
