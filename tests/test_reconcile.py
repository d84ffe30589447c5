"""Reconciling the provider's blacklist with the ledger (docs/reconciliation.md): the fake
provider's get-blacklist (pages, the Turkey-time date filter, panel additions), the three cases,
drift repaired once, opted-in numbers never re-added, and what `optouts overdue` sees."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from reconcile_support import OPT_OUT_AND_IN_RULES

from keyrouter.cli import main
from keyrouter.compliance.channels import channel_of, provider_id
from keyrouter.compliance.overdue import collect
from keyrouter.compliance.reconcile import Reconciler, iys_params_of
from keyrouter.message import TURKEY
from keyrouter.providers.blacklist import fetch_blacklist, filter_date
from keyrouter.providers.iletimerkezi import AuthenticationRefused, IletiMerkezi
from keyrouter.testing import FakeIletiMerkezi, FakeIys, pipeline, process

pytestmark = pytest.mark.anyio

RULES = OPT_OUT_AND_IN_RULES
LINK = "+905321110001"  # clicked the iim.to opt-out link: on the blacklist only
HOUR = 3600.0


def numbers(n: int, start: int = 0) -> list[str]:
    return [f"+90532{i:07d}" for i in range(start, start + n)]


def reconciler(runtime: Any, **kw: Any) -> Reconciler:
    return Reconciler(runtime.store, runtime.client, router=runtime.router,
                      iys=iys_params_of(runtime.router.rules, "HS_WEB"), settle=0.0, **kw)


async def test_2500_numbers_take_three_pages(fake: FakeIletiMerkezi, client: IletiMerkezi) -> None:
    fake.add_from_panel(*numbers(2500))
    listing = await fetch_blacklist(client)
    assert (listing.pages, listing.calls, len(listing.numbers)) == (3, 3, 2500)
    assert listing.count == 2500 and set(listing.numbers) == fake.blacklist
    pages = [r.body["request"]["blacklist"] for r in fake.requests if r.endpoint == "get-blacklist"]
    assert [(p["page"], p["rowCount"]) for p in pages] == [("1", "1000"), ("2", "1000"), ("3", "1000")]


async def test_exactly_2000_numbers_read_an_empty_third_page(fake: FakeIletiMerkezi,
                                                             client: IletiMerkezi) -> None:
    """`count` is the account's total, so the end is the first short page, even an empty one."""
    fake.add_from_panel(*numbers(2000))
    listing = await fetch_blacklist(client)
    assert (listing.pages, len(listing.numbers)) == (3, 2000)


async def test_the_date_filter_is_turkey_time(fake: FakeIletiMerkezi, client: IletiMerkezi) -> None:
    at = datetime(2026, 12, 1, 10, 0, 0, tzinfo=TURKEY).timestamp()  # 07:00 UTC
    fake.add_from_panel("+905321110002", at=at)
    fake.add_from_panel("+905321110003", at=at + 2 * HOUR)
    assert filter_date(at) == "2026-12-01 10:00:00"
    found = await fetch_blacklist(client, start=at - 1, end=at + HOUR)
    assert found.numbers == ["+905321110002"]
    assert found.count == 2  # the account's total, whatever the filter
    sent = fake.requests[-1].body["request"]["blacklist"]["filter"]
    assert sent == {"start": "2026-12-01 09:59:59", "end": "2026-12-01 11:00:00"}


async def test_transient_pages_are_retried_and_401_names_the_causes(
        fake: FakeIletiMerkezi, client: IletiMerkezi) -> None:
    fake.add_from_panel(*numbers(1500))
    fake.fail_next("get-blacklist", 503, times=2)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    listing = await fetch_blacklist(client, sleep=sleep)
    assert (listing.pages, listing.calls, len(listing.numbers)) == (2, 4, 1500)
    assert slept == [1.0, 2.0]
    fake.fail_next("get-blacklist", 401)
    with pytest.raises(AuthenticationRefused, match="Allow API access"):
        await fetch_blacklist(client)


async def test_a_provider_that_ignores_page_is_an_error_not_a_loop(client: IletiMerkezi,
                                                                   fake: FakeIletiMerkezi) -> None:
    fake.add_from_panel(*numbers(1000))
    fake.reply_next("get-blacklist", {"response": {"status": {"code": 200, "message": "ok"},
                                                   "blacklist": {"count": 5000,
                                                                 "number": numbers(1000)}}},
                    times=2)
    with pytest.raises(Exception, match="ignores `page`"):
        await fetch_blacklist(client)


async def test_a_link_click_opt_out_reaches_ledger_iys_and_overdue(write_rules, capsys) -> None:
    rules = write_rules(RULES)
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        iys.add_record(LINK, "ONAY")
        provider.add_from_panel(LINK, at=time.time() - 2 * HOUR)
        async with pipeline(rules, fake=provider, **iys.settings()) as runtime:
            # 10 days ago: İYS is down, so the İYS effect is still pending past its deadline
            iys.fail_next("consents", 503, times=100)
            old = reconciler(runtime, clock=lambda: time.time() - 10 * 86400)
            outcome = await old.run(runtime.dispatcher.process)
            assert outcome.result == "reported" and len(outcome.left) == 1
            cases = await collect(runtime.store, None, router=runtime.router, pending_only=True)
            assert [(c.effect, c.number, c.where) for c in cases] == [("iys_ret", LINK, "retrying")]
            assert cases[0].deadline < time.time()  # overdue
            # İYS is back: the next pass runs the kept row again (no new one)
            with iys.lock:
                iys._faults.clear()
            await runtime.store.retry_dead(outcome.left[0])  # harmless when not dead
            await _wait_retry(runtime)
            again = await reconciler(runtime).run(runtime.dispatcher.process)
            ledger = await runtime.store.optouts()
    assert again.result == "agree" and again.plan.record == []
    assert sorted(e.action for e in ledger) == ["blacklist", "iys_ret"]
    assert {channel_of(e.message_id) for e in ledger} == {"provider"}
    assert ledger[0].message_id == provider_id(LINK, None)
    [ret] = [r for r in iys.records if r["status"] == "RET"]
    assert (ret["recipient"], ret["source"]) == (LINK, "HS_WEB")


async def _wait_retry(runtime: Any) -> None:
    """Let the dispatcher's retry time of the failed İYS entry pass (retry_base is tiny)."""
    await asyncio.sleep(0.3)


def test_overdue_command_lists_a_pending_provider_opt_out(write_rules, tmp_path: Path,
                                                          capsys, monkeypatch) -> None:
    monkeypatch.setenv("KEYROUTER_NAMESPACE", "test")  # pipeline()'s
    rules = write_rules(RULES)
    store = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        iys.add_record(LINK, "ONAY")
        provider.add_from_panel(LINK)
        iys.fail_next("consents", 503, times=100)

        async def reconcile_ten_days_ago() -> None:
            async with pipeline(rules, fake=provider, store=store, **iys.settings()) as runtime:
                await reconciler(runtime, clock=lambda: time.time() - 10 * 86400).run(
                    runtime.dispatcher.process)

        asyncio.run(reconcile_ten_days_ago())
    code = main(["optouts", "overdue", "--store", store, "--rules", str(rules)])
    out = capsys.readouterr().out
    assert code == 1 and "OVERDUE\tİYS\t+90532***0001\tmessage provider:" in out


async def test_drift_is_repaired_once_and_an_opt_in_is_never_re_added(write_rules) -> None:
    rules = write_rules(RULES)
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        async with pipeline(rules, fake=provider, **iys.settings()) as runtime:
            gone, back = "+905321110010", "+905321110011"
            for sender in (gone, back):
                await process(runtime, [provider.add_message("RET", sender=sender)])
            await process(runtime, [provider.add_message("BASLA", sender=back)])
            with provider.lock:
                provider.blacklist.discard(gone)  # removed by hand in the panel
            first = await reconciler(runtime).run(runtime.dispatcher.process)
            second = await reconciler(runtime).run(runtime.dispatcher.process)
            adds = [r for r in provider.requests if r.endpoint == "add-blacklist"]
    assert first.readded == [gone] and first.drift()["missing_at_provider"] == 1
    assert first.result == "agree"  # repaired: they agree at the end
    assert second.readded == [] and second.drift() == {"missing_at_provider": 0, "optin_not_held": 0}
    assert gone in provider.blacklist and back not in provider.blacklist
    assert [r.body["request"]["blacklist"]["number"] for r in adds].count(back[1:]) == 1  # its RET


async def test_on_the_list_after_an_opt_in(write_rules) -> None:
    """Full pass: reported, unchanged.  Incremental pass whose window starts after the opt-in: a
    new provider opt-out."""
    rules = write_rules(RULES)
    number = "+905321110020"
    with FakeIletiMerkezi() as provider, FakeIys() as iys:
        iys.add_record(number, "ONAY")
        async with pipeline(rules, fake=provider, **iys.settings()) as runtime:
            old = datetime.fromtimestamp(time.time() - 30 * 86400, TURKEY).strftime("%Y-%m-%d %H:%M:%S")
            await process(runtime, [provider.add_message("BASLA", sender=number, date=old)])
            provider.add_from_panel(number, at=time.time() - 20 * 86400)  # before the first pass
            full = await reconciler(runtime).run(runtime.dispatcher.process)
            assert full.plan.reported == [number] and full.result == "reported"
            assert (await runtime.store.latest_optout(number)).action in ("unblacklist", "iys_onay")
            with provider.lock:  # the number leaves and comes back by a link click
                provider.blacklist.discard(number)
            provider.add_from_panel(number)
            later = reconciler(runtime, clock=lambda: time.time() + 60)
            step = await later.run(runtime.dispatcher.process, full=False)
            latest = await runtime.store.latest_optout(number)
    assert step.plan.mode == "incremental" and [r[2] for r in step.plan.record] == [number]
    assert step.result == "agree"
    assert latest.action in ("blacklist", "iys_ret") and channel_of(latest.message_id) == "provider"


def test_dry_run_changes_nothing(write_rules, tmp_path: Path, capsys, monkeypatch) -> None:
    rules = write_rules(RULES.replace(", iys]", "]").replace(", {iys: {status: ONAY}}]", "]"))
    store = f"sqlite:///{tmp_path / 'k.sqlite3'}"
    with FakeIletiMerkezi() as provider:
        provider.add_from_panel(LINK)
        for key, value in (("ILETIMERKEZI_API_KEY", provider.key), ("ILETIMERKEZI_API_HASH",
                           provider.hash), ("ILETIMERKEZI_BASE_URL", provider.base_url)):
            monkeypatch.setenv(key, value)
        args = ["optouts", "reconcile", "--store", store, "--rules", str(rules)]
        assert main([*args, "--dry-run"]) == 1
        out = capsys.readouterr().out
        assert "1 opt-out(s) only on the provider's blacklist would be recorded" in out
        assert "+90532***0001" in out and LINK not in out
        assert main(["optouts", "export", "--store", store]) == 0
        assert LINK not in capsys.readouterr().out
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "result: the ledger and the provider agree" in out
        assert main(["optouts", "export", "--store", store, "--format", "jsonl"]) == 0
        exported = capsys.readouterr().out
        assert '"channel": "provider"' in exported and LINK in exported
        assert main(["optouts", "stats", "--store", store, "--rules", str(rules)]) == 0
        assert "provider 1" in capsys.readouterr().out


def test_bad_settings_exit_2(write_rules, monkeypatch, capsys) -> None:
    for key in ("ILETIMERKEZI_API_KEY", "ILETIMERKEZI_API_HASH"):
        monkeypatch.delenv(key, raising=False)
    assert main(["optouts", "reconcile", "--store", "memory://", "--rules",
                 str(write_rules(RULES))]) == 2
    assert "ILETIMERKEZI_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("ILETIMERKEZI_API_KEY", "k")
    monkeypatch.setenv("ILETIMERKEZI_API_HASH", "h")
    for name in ("IYS_USERNAME", "IYS_PASSWORD", "IYS_CODE", "IYS_BRAND_CODE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["optouts", "reconcile", "--store", "memory://", "--rules",
                 str(write_rules(RULES))]) == 2
    assert "IYS_USERNAME" in capsys.readouterr().err
    monkeypatch.setenv("KEYROUTER_RECONCILE_INTERVAL", "soon")
    assert main(["optouts", "reconcile", "--store", "memory://", "--rules",
                 str(write_rules(RULES))]) == 2
    assert "KEYROUTER_RECONCILE_INTERVAL" in capsys.readouterr().err


def test_the_fake_answers_a_bad_filter_date_with_422(fake: FakeIletiMerkezi) -> None:
    body = {"request": {"authentication": {"key": fake.key, "hash": fake.hash},
                        "blacklist": {"filter": {"start": "yesterday"}}}}
    answer = httpx.post(f"{fake.base_url}/v1/get-blacklist/json", json=body)
    assert answer.status_code == 422


async def test_the_ledger_is_read_a_page_at_a_time(monkeypatch) -> None:
    """A full pass reads the ledger newest first in pages; each number's latest entry is the one
    `latest_optout` gives, and only a message with a blacklist line counts as blocked."""
    from keyrouter.compliance import reconcile
    from keyrouter.store import OptOut, open_store

    monkeypatch.setattr(reconcile, "LEDGER_PAGE", 2)
    async with open_store("memory://", "pages") as store:
        a, b, c = "+905321110031", "+905321110032", "+905321110033"
        for entry in (OptOut(a, "blacklist", "1", "RET", 100.0, 101.0),
                      OptOut(a, "iys_ret", "1", "RET", 100.0, 101.0),
                      OptOut(a, "unblacklist", "2", "BASLA", 200.0, 201.0),
                      OptOut(b, "iys_ret", "3", "RET", 150.0, 151.0),
                      OptOut(c, "blacklist", "4", "RET", 50.0, 51.0),
                      OptOut(c, "iys_ret", "4", "RET", 50.0, 51.0)):
            await store.record_optout(entry)
        latest = await Reconciler(store, None, settle=0.0)._latest_by_number()  # type: ignore[arg-type]
        for number in (a, b, c):
            assert latest[number].message_id == (await store.latest_optout(number)).message_id
    assert (latest[a].action, latest[a].blocked) == ("unblacklist", False)
    assert (latest[b].action, latest[b].blocked) == ("iys_ret", False)
    assert latest[c].action in ("blacklist", "iys_ret") and latest[c].blocked
