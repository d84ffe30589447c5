"""`blacklist` / `unblacklist` against the fake provider, with the opt-out ledger in MemoryStore."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from keyrouter.handlers.blacklist import blacklist, params_problem, unblacklist
from keyrouter.providers.iletimerkezi import (
    AuthenticationRefused,
    IletiMerkezi,
    PermanentApiError,
    TransientApiError,
)
from keyrouter.retries import PermanentError
from keyrouter.store.base import OptOut
from keyrouter.testing import FakeIletiMerkezi

from .support import FAST, NUMBER, WIRE, match

pytestmark = pytest.mark.anyio


def bodies(fake: FakeIletiMerkezi, endpoint: str) -> list[dict]:
    return [r.body["request"] for r in fake.requests if r.endpoint == endpoint]


async def test_blacklist_sends_the_sender_and_records_the_ledger(
    fake, client, store, make_message, make_context
) -> None:
    message = make_message("RET", age=timedelta(minutes=5))
    before = time.time()
    await blacklist(message, match(keyword="RET"), make_context(client=client, store=store))
    [request] = bodies(fake, "add-blacklist")
    assert request["blacklist"] == {"number": WIRE}
    assert set(request) == {"authentication", "blacklist"}
    assert fake.blacklist == {NUMBER}
    [entry] = await store.optouts()
    assert entry == OptOut(
        number=NUMBER,
        action="blacklist",
        message_id="m-1",
        keyword="RET",
        received_at=message.received_at.timestamp(),
        handled_at=entry.handled_at,
    )
    assert before <= entry.handled_at <= time.time()


@pytest.mark.parametrize("sender", ["5354104818", "05354104818", "905354104818", "+90 535 410 48 18"])
async def test_any_common_form_of_the_sender_goes_as_905(
    sender, fake, client, make_message, make_context
) -> None:
    await blacklist(make_message(sender=sender), None, make_context(client=client))
    assert bodies(fake, "add-blacklist")[0]["blacklist"] == {"number": WIRE}


async def test_a_repeat_is_harmless_and_the_ledger_keeps_one_line(
    fake, client, store, make_message, make_context
) -> None:
    message = make_message()
    for _ in range(2):  # a crash after the call, then the retry with the same entry
        await blacklist(message, match(), make_context(client=client, store=store))
    assert len(bodies(fake, "add-blacklist")) == 2
    assert fake.blacklist == {NUMBER}
    assert len(await store.optouts()) == 1


async def test_short_code_sender_is_never_guessed(fake, client, store, make_message, make_context) -> None:
    # The provider's own example row: "sender": "7889", "number": "+905354104818".
    message = make_message(sender="7889", receiver=NUMBER)
    for handler in (blacklist, unblacklist):
        with pytest.raises(PermanentError) as caught:
            await handler(message, match(), make_context(client=client, store=store))
        text = str(caught.value)
        assert "the row's sender is not a mobile number" in text
        assert "docs/handlers.md, 'Sender and number'" in text
        assert "4818" not in text  # nothing of the receiving number
    assert fake.requests == [] and fake.blacklist == set()
    assert await store.optouts() == []


async def test_alphanumeric_sender_is_masked_in_the_error(client, make_message, make_context) -> None:
    with pytest.raises(PermanentError, match=r"'AC\*\*\*NK'"):
        await blacklist(make_message(sender="ACMEBANK"), None, make_context(client=client))


async def test_466_is_permanent_with_the_reason(fake, client, store, make_message, make_context) -> None:
    fake.fail_next("add-blacklist", 466)
    with pytest.raises(PermanentError, match="invalid number") as caught:
        await blacklist(make_message(), match(), make_context(client=client, store=store))
    assert "+90535***4818" in str(caught.value) and NUMBER not in str(caught.value)
    assert await store.optouts() == []


async def test_unblacklist_removes_and_records(fake, client, store, make_message, make_context) -> None:
    fake.blacklist.add(NUMBER)
    await unblacklist(make_message("BASLA"), match(keyword="BASLA"), make_context(client=client, store=store))
    assert bodies(fake, "delete-blacklist")[0]["blacklist"] == {"number": WIRE}
    assert fake.blacklist == set()
    [entry] = await store.optouts()
    assert (entry.action, entry.keyword, entry.number) == ("unblacklist", "BASLA", NUMBER)


async def test_unblacklist_474_counts_as_success(fake, client, store, make_message, make_context) -> None:
    await unblacklist(make_message(), None, make_context(client=client, store=store))  # real 474
    fake.fail_next("delete-blacklist", 474)
    await unblacklist(make_message(id="m-2"), None, make_context(client=client, store=store))
    assert [(e.message_id, e.action, e.keyword) for e in await store.optouts()] == [
        ("m-1", "unblacklist", None),
        ("m-2", "unblacklist", None),
    ]


async def test_474_on_blacklist_is_not_swallowed(fake, client, make_message, make_context) -> None:
    fake.fail_next("add-blacklist", 474)
    with pytest.raises(PermanentApiError) as caught:
        await blacklist(make_message(), None, make_context(client=client))
    assert caught.value.code == 474


@pytest.mark.parametrize("fault", [503, 500, "html502", "reset"])
async def test_provider_outage_is_retryable(fault, fake, client, store, make_message, make_context) -> None:
    fake.fail_next("add-blacklist", fault)
    with pytest.raises(TransientApiError) as caught:
        await blacklist(make_message(), None, make_context(client=client, store=store))
    assert not isinstance(caught.value, PermanentError)
    assert await store.optouts() == []


async def test_401_propagates(fake, make_message, make_context) -> None:
    async with IletiMerkezi("wrong", "creds", base_url=fake.base_url, timeout=FAST) as bad:
        for handler in (blacklist, unblacklist):
            with pytest.raises(AuthenticationRefused):
                await handler(make_message(), None, make_context(client=bad))


async def test_no_client_says_which_credentials_are_missing(make_message, make_context) -> None:
    with pytest.raises(PermanentError, match=r"ILETIMERKEZI_API_KEY.*ILETIMERKEZI_API_HASH"):
        await blacklist(make_message(), None, make_context())


async def test_works_without_a_store(fake, client, make_message, make_context) -> None:
    await blacklist(make_message(), None, make_context(client=client, store=None))
    assert fake.blacklist == {NUMBER}


async def test_params_are_rejected(client, make_message, make_context) -> None:
    assert params_problem({}) is None
    assert "unknown param(s) number" in (params_problem({"number": "x"}) or "")
    with pytest.raises(PermanentError, match="unknown param"):
        await blacklist(make_message(), None, make_context({"number": "905"}, client=client))


async def test_an_older_request_never_undoes_a_newer_one(
    fake, client, store, make_message, make_context
) -> None:
    """A BASLA that died and is retried by hand after the person sent RET changes nothing."""
    basla = make_message("BASLA", id="old-basla", age=timedelta(hours=2))
    ret = make_message("RET", id="new-ret", age=timedelta(minutes=5))
    await blacklist(ret, match(keyword="RET"), make_context(client=client, store=store))
    await unblacklist(basla, match(keyword="BASLA"), make_context(client=client, store=store))
    assert fake.blacklist == {NUMBER}
    assert bodies(fake, "delete-blacklist") == []
    assert [e.message_id for e in await store.optouts()] == ["new-ret"]
    # the same older request is applied when nothing newer has been decided
    other = make_message("BASLA", id="basla-2", sender="05321112233", age=timedelta(hours=2))
    await unblacklist(other, match(keyword="BASLA"), make_context(client=client, store=store))
    assert len(bodies(fake, "delete-blacklist")) == 1
