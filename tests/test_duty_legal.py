"""Legal effects (`blacklist`, `iys`) are retried until one business day before their deadline,
not for KEYROUTER_MAX_ATTEMPTS only (docs/opt-out-duty.md).  A clock the test controls, the shipped
rules with İYS on, every backend."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from duty_support import NUMBER, Backend, backend_fixture, shipped_rules_with_iys  # noqa: F401

from keyrouter.compliance import overdue as compliance
from keyrouter.compliance.deadlines import deadline
from keyrouter.dispatch.duty import give_up_at
from keyrouter.message import TURKEY
from keyrouter.testing import FakeIletiMerkezi, FakeIys, pipeline, process

pytestmark = pytest.mark.anyio

#: a Monday without holidays around: give-up point Thursday 00:00, deadline Friday 00:00
RECEIVED = datetime(2026, 11, 2, 10, 0, tzinfo=TURKEY).timestamp()
STEP = 5.0  # fake seconds between polls


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_give_up_point_is_one_business_day_before_the_deadline() -> None:
    assert datetime.fromtimestamp(give_up_at(RECEIVED), TURKEY) == datetime(2026, 11, 5, tzinfo=TURKEY)
    assert deadline(RECEIVED) == datetime(2026, 11, 6, tzinfo=TURKEY)
    friday = datetime(2026, 11, 6, 16, 0, tzinfo=TURKEY).timestamp()  # Mon, Tue, Wed: Thursday
    assert datetime.fromtimestamp(give_up_at(friday), TURKEY) == datetime(2026, 11, 11, tzinfo=TURKEY)


@pytest.mark.parametrize("down", ["add-blacklist", "iys", "both"])
async def test_a_ten_minute_outage_ends_with_the_opt_out_done(
        down: str, backend: Backend, tmp_path: Path) -> None:
    clock = Clock(RECEIVED + 1)
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        iys.add_record(NUMBER, "ONAY")
        if down in ("add-blacklist", "both"):
            provider.fail_next("add-blacklist", 503, times=10_000)
        if down in ("iys", "both"):
            iys.fail_next("consents", 503, times=10_000, retry_after="60")
        async with pipeline(shipped_rules_with_iys(tmp_path), fake=provider, store=backend.url,
                            namespace=backend.namespace, retry_base=10, retry_max=900,
                            max_attempts=5, **iys.settings()) as runtime:
            runtime.dispatcher.clock = clock
            store, router = runtime.store, runtime.router
            effects = compliance.effects_of_rules(router.rules)
            ret = provider.add_message("RET", sender="05354104818", date="2026-11-02 10:00:00")
            retries = 0
            while clock.now < RECEIVED + 600:  # the outage
                report = await process(runtime, [ret])
                retries += report.retrying
                assert report.dead == 0 and await store.dead_letters() == []
                cases = await compliance.collect(store, effects, router=router, pending_only=True)
                assert cases and {c.state for c in cases} == {"pending"}
                assert compliance.summary(cases, clock.now)["blacklist"]["overdue"] == 0
                clock.now += STEP
            provider.clear_faults()
            iys.clear_faults()
            for _ in range(200):  # after it: the next retry is due within the backoff's cap
                if not await store.unfinished([ret["id"]]):
                    break
                await process(runtime, [ret])
                clock.now += STEP
            ledger = {e.action for e in await store.optouts()}
            dead = await store.dead_letters()
            pending = await compliance.collect(store, effects, router=router, pending_only=True)
    assert retries > 5  # more attempts than KEYROUTER_MAX_ATTEMPTS, none dead-lettered
    assert dead == [] and pending == []
    assert ledger == {"blacklist", "iys_ret"}
    assert NUMBER in provider.blacklist
    assert [r["status"] for r in iys.records] == ["ONAY", "RET"]


async def test_an_outage_past_the_give_up_point_dead_letters_then_and_not_before(
        backend: Backend, tmp_path: Path) -> None:
    clock = Clock(RECEIVED + 1)
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        provider.fail_next("add-blacklist", 503, times=10_000)
        async with pipeline(shipped_rules_with_iys(tmp_path), fake=provider, store=backend.url,
                            namespace=backend.namespace, retry_base=10, retry_max=900,
                            max_attempts=5, **iys.settings()) as runtime:
            runtime.dispatcher.clock = clock
            store = runtime.store
            ret = provider.add_message("RET", sender="05354104818", date="2026-11-02 10:00:00")
            give_up = give_up_at(RECEIVED)
            while not await store.dead_letters():
                assert clock.now < give_up + 1800, "never dead-lettered"
                await process(runtime, [ret])
                clock.now += 300
            [letter] = await store.dead_letters()
            effects = compliance.effects_of_rules(runtime.router.rules)
            cases = await compliance.collect(store, effects, router=runtime.router)
    assert give_up <= letter.failed_at < give_up + 1800
    assert letter.attempts > 100 and "503" in letter.error
    # still pending (in the dead letters) with a business day to go
    assert [(c.effect, c.state, c.where) for c in cases if c.effect == "blacklist"] == [
        ("blacklist", "pending", "dead letter")]
    assert compliance.summary(cases, clock.now)["blacklist"]["overdue"] == 0
