"""`reply` against the fake provider: the exact send-sms body, status codes, safe templates, age."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from keyrouter.handlers.reply import handle, params_problem, template_problem
from keyrouter.handlers.templating import TemplateError
from keyrouter.providers.iletimerkezi import (
    AuthenticationRefused,
    IletiMerkezi,
    PermanentApiError,
    TransientApiError,
)
from keyrouter.retries import PermanentError
from keyrouter.settings import Settings
from keyrouter.testing import FakeIletiMerkezi

from .support import FAST, NUMBER, WIRE, match

pytestmark = pytest.mark.anyio

SETTINGS = Settings(sender="ACME")


def orders(fake: FakeIletiMerkezi) -> list[dict]:
    return [r.body["request"]["order"] for r in fake.requests if r.endpoint == "send-sms"]


async def test_the_exact_send_sms_body(fake, client, make_message, make_context) -> None:
    context = make_context({"text": "Listeden çıkarıldınız."}, client=client, settings=SETTINGS)
    await handle(make_message("RET"), match(), context)
    assert orders(fake) == [
        {
            "sender": "ACME",
            "sendDateTime": [],
            "iys": "0",
            "iysList": "BIREYSEL",
            "message": {"text": "Listeden çıkarıldınız.", "receipents": {"number": [WIRE]}},
        }
    ]
    [sms] = fake.sent
    assert (sms.numbers, sms.iys, sms.sender) == ((NUMBER,), "0", "ACME")


async def test_the_sender_param_beats_the_setting(fake, client, make_message, make_context) -> None:
    context = make_context({"text": "ok", "sender": "OTHER"}, client=client, settings=SETTINGS)
    await handle(make_message(), None, context)
    assert orders(fake)[0]["sender"] == "OTHER"


async def test_no_sender_name_says_how_to_set_it(fake, client, make_message, make_context) -> None:
    for settings in (None, Settings()):
        with pytest.raises(PermanentError, match="ILETIMERKEZI_SENDER"):
            await handle(make_message(), None, make_context({"text": "ok"}, client=client, settings=settings))
    assert fake.requests == []


async def test_no_client_says_which_credentials_are_missing(make_message, make_context) -> None:
    with pytest.raises(PermanentError, match=r"ILETIMERKEZI_API_KEY.*ILETIMERKEZI_API_HASH"):
        await handle(make_message(), None, make_context({"text": "ok"}, settings=SETTINGS))


@pytest.mark.parametrize("sender", ["7889", "ACMEBANK", ""])
async def test_a_sender_that_is_not_a_mobile_gets_no_reply(
    sender, fake, client, make_message, make_context
) -> None:
    context = make_context({"text": "ok"}, client=client, settings=SETTINGS)
    with pytest.raises(PermanentError, match="not a mobile number"):
        await handle(make_message(sender=sender, receiver=NUMBER), None, context)
    assert fake.requests == []


async def test_451_counts_as_sent(fake, client, make_message, make_context, caplog) -> None:
    context = make_context({"text": "Tamam"}, client=client, settings=SETTINGS)
    await handle(make_message(), None, context)
    with caplog.at_level(logging.INFO, "test"):
        await handle(make_message(), None, context)  # the fake answers 451 to the same text
        fake.fail_next("send-sms", 451)
        await handle(make_message(), None, context)
    assert len(fake.sent) == 1 and len(orders(fake)) == 3
    assert sum("451" in r.getMessage() for r in caplog.records) == 2


async def test_452_is_logged_and_does_not_hold_up_the_rule(fake, client, make_message, make_context,
                                                           caplog) -> None:
    fake.blacklist.add(NUMBER)  # already blocked, e.g. by the panel's own RET handling
    context = make_context({"text": "Listeden çıkarıldınız."}, client=client, settings=SETTINGS)
    with caplog.at_level(logging.WARNING, "test"):
        await handle(make_message(), None, context)  # returns: the blacklist entry still runs
    (record,) = [r for r in caplog.records if "452" in r.getMessage()]
    text = record.getMessage()
    assert "+90535***4818" in text and NUMBER not in text and "put reply before blacklist" in text
    assert fake.sent == []


@pytest.mark.parametrize("fault", [503, 500, "html502"])
async def test_outage_is_retryable(fault, fake, client, make_message, make_context) -> None:
    fake.fail_next("send-sms", fault)
    with pytest.raises(TransientApiError) as caught:
        await handle(make_message(), None, make_context({"text": "ok"}, client=client, settings=SETTINGS))
    assert not isinstance(caught.value, PermanentError)


async def test_other_refusals_escape_as_permanent_api_errors(fake, make_message, make_context) -> None:
    with FakeIletiMerkezi(fake.key, fake.hash, approved_senders={"ACME"}) as strict:
        async with IletiMerkezi(fake.key, fake.hash, base_url=strict.base_url, timeout=FAST) as api:
            context = make_context({"text": "ok", "sender": "NOTAPPROVED"}, client=api)
            with pytest.raises(PermanentApiError) as caught:
                await handle(make_message(), None, context)
    assert caught.value.code == 450


async def test_401_propagates(fake, make_message, make_context) -> None:
    async with IletiMerkezi("wrong", "creds", base_url=fake.base_url, timeout=FAST) as bad:
        with pytest.raises(AuthenticationRefused):
            await handle(make_message(), None, make_context({"text": "ok"}, client=bad, settings=SETTINGS))


async def test_template_fields_and_captures(fake, client, make_message, make_context) -> None:
    context = make_context(
        {"text": "#{id} {rule}/{keyword} to {receiver}: {choice}"}, client=client, settings=SETTINGS
    )
    await handle(make_message("ANKET B", id="x9"), match("survey", "ANKET", choice="b"), context)
    assert fake.sent[0].text == "#x9 survey/ANKET to 7889: b"


@pytest.mark.parametrize("hostile", ["{__class__}", "%s%s%s", "{0}", "{choice}", "{text} %(x)s }{"])
async def test_hostile_captures_and_texts_are_sent_literally(
    hostile, fake, client, make_message, make_context
) -> None:
    context = make_context({"text": "Seçim: {choice} / {sender}"}, client=client, settings=SETTINGS)
    message = make_message(f"ANKET {hostile}")
    await handle(message, match("survey", None, choice=hostile), context)
    assert fake.sent[0].text == f"Seçim: {hostile} / {NUMBER}"


async def test_unknown_placeholder_is_permanent_and_sends_nothing(
    fake, client, make_message, make_context
) -> None:
    context = make_context({"text": "Kodunuz {code}"}, client=client, settings=SETTINGS)
    with pytest.raises(TemplateError, match=r"\{code\}"):
        await handle(make_message(), match(choice="a"), context)
    assert fake.requests == []


async def test_old_messages_get_no_reply(fake, client, make_message, make_context, caplog) -> None:
    with caplog.at_level(logging.INFO, "test"):
        # default max_age: 1h
        await handle(
            make_message(age=timedelta(hours=2)),
            None,
            make_context({"text": "ok"}, client=client, settings=SETTINGS),
        )
        await handle(
            make_message(age=timedelta(minutes=31)),
            None,
            make_context({"text": "ok", "max_age": "30m"}, client=client, settings=SETTINGS),
        )
    assert fake.requests == []
    assert sum("older than max_age" in r.getMessage() for r in caplog.records) == 2
    await handle(
        make_message(age=timedelta(hours=2)),
        None,
        make_context({"text": "ok", "max_age": "3h"}, client=client, settings=SETTINGS),
    )
    await handle(
        make_message(age=timedelta(minutes=50), id="m-2"),
        None,
        make_context({"text": "ok2"}, client=client, settings=SETTINGS),
    )
    assert len(fake.sent) == 2


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({}, "text param is required"),
        ({"text": "ok", "max_age": "soon"}, "max_age"),
        ({"text": "ok", "txt": "x"}, "unknown param(s) txt"),
        ({"text": "{ choice }"}, "stray"),
        ({"text": "ok", "sender": ""}, "sender must be"),
    ],
)
async def test_bad_params_are_permanent(params, needle, fake, client, make_message, make_context) -> None:
    assert needle in (params_problem(params) or "")
    with pytest.raises(PermanentError, match="reply"):
        await handle(make_message(), None, make_context(params, client=client, settings=SETTINGS))
    assert fake.requests == []


def test_params_problem_with_known_captures() -> None:
    assert params_problem({"text": "{choice}"}, captures=["choice"]) is None
    assert "{code}" in (params_problem({"text": "{code}"}, captures=["choice"]) or "")
    assert template_problem("{id}") is None
