"""keyrouter.providers.iletimerkezi against a real local server (keyrouter.testing), not mocks."""

from __future__ import annotations

import logging
import pickle
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from keyrouter.providers.iletimerkezi import (
    AUTH_HELP,
    DEFAULT_TIMEOUT,
    DUPLICATE_SMS,
    NOT_ON_BLACKLIST,
    STATUS_CODES,
    ApiError,
    AuthenticationRefused,
    IletiMerkezi,
    Inbox,
    PermanentApiError,
    TransientApiError,
)
from keyrouter.testing import FakeIletiMerkezi, inbox_response

KEY = "kEy-5ecret-9f1c2e"
HASH = "hAsh-5ecret-77ab04"
AUTH = {"key": KEY, "hash": HASH}
FAST = httpx.Timeout(1.0, read=0.3)

pytestmark = pytest.mark.anyio  # the backend ("asyncio") comes from tests/conftest.py


@pytest.fixture
def fake() -> Iterator[FakeIletiMerkezi]:
    with FakeIletiMerkezi(KEY, HASH) as server:
        yield server


def client_for(fake: FakeIletiMerkezi) -> IletiMerkezi:
    # verify=False: the fake speaks plain HTTP, and loading CA certificates costs ~35 ms a client.
    transport = httpx.AsyncHTTPTransport(verify=False)
    return IletiMerkezi(KEY, HASH, base_url=fake.base_url, timeout=FAST, transport=transport)


async def raised(call: Callable[[], Awaitable[object]]) -> ApiError:
    with pytest.raises(ApiError) as info:
        await call()
    return info.value


# --- happy paths, exact request bodies ---------------------------------------------------------


async def test_get_inbox_sends_only_authentication(fake: FakeIletiMerkezi) -> None:
    first = fake.add_message("ILT AHKTEST RET", sender="7889", number="+905354104818")
    second = fake.add_message("anket a")
    async with client_for(fake) as client:
        inbox = await client.get_inbox()
    assert inbox == Inbox(rows=[first, second], total_rows=2)
    assert fake.requests == [("get-inbox", {"request": {"authentication": AUTH}})]


async def test_send_sms_body_and_number_format(fake: FakeIletiMerkezi) -> None:
    numbers = ["+905354104818", "0555 123 45 67", "5321112233"]
    async with client_for(fake) as client:
        order_id = await client.send_sms(
            sender="ACME", text="Listeden çıkarıldınız.", numbers=numbers
        )
    assert order_id == fake.sent[0].id
    assert isinstance(order_id, str)
    assert fake.requests[0].body == {
        "request": {
            "authentication": AUTH,
            "order": {
                "sender": "ACME",
                "sendDateTime": [],
                "iys": "0",
                "iysList": "BIREYSEL",
                "message": {
                    "text": "Listeden çıkarıldınız.",
                    "receipents": {"number": ["905354104818", "905551234567", "905321112233"]},
                },
            },
        }
    }


async def test_send_sms_commercial_flags_pass_through(fake: FakeIletiMerkezi) -> None:
    async with client_for(fake) as client:
        await client.send_sms(
            sender="ACME", text="Kampanya", numbers=["5354104818"], iys="1", iys_list="TACIR"
        )
    order = fake.requests[0].body["request"]["order"]
    assert (order["iys"], order["iysList"]) == ("1", "TACIR")


async def test_send_sms_needs_a_number(fake: FakeIletiMerkezi) -> None:
    async with client_for(fake) as client:
        with pytest.raises(ValueError):
            await client.send_sms(sender="ACME", text="x", numbers=[])
    assert fake.requests == []


async def test_blacklist_add_is_idempotent_delete_is_not(fake: FakeIletiMerkezi) -> None:
    async with client_for(fake) as client:
        await client.add_blacklist("+90 535 410 48 18")
        await client.add_blacklist("05354104818")
        assert fake.blacklist == {"+905354104818"}
        await client.delete_blacklist("5354104818")
        assert fake.blacklist == set()
        error = await raised(lambda: client.delete_blacklist("5354104818"))
    assert type(error) is PermanentApiError
    assert error.code == NOT_ON_BLACKLIST == 474
    assert error.endpoint == "delete-blacklist"
    expected = {"authentication": AUTH, "blacklist": {"number": "905354104818"}}
    assert [r.body["request"] for r in fake.requests] == [expected] * 4
    assert [r.endpoint for r in fake.requests] == ["add-blacklist"] * 2 + ["delete-blacklist"] * 2


async def test_one_connection_is_reused(fake: FakeIletiMerkezi) -> None:
    async with client_for(fake) as client:
        for _ in range(3):
            await client.get_inbox()
        await client.add_blacklist("5354104818")
    assert fake.connections == 1


async def test_defaults_and_repr() -> None:
    client = IletiMerkezi(KEY, HASH)
    try:
        assert client._http.timeout == DEFAULT_TIMEOUT
        assert (DEFAULT_TIMEOUT.connect, DEFAULT_TIMEOUT.read) == (5.0, 20.0)
        assert repr(client) == "IletiMerkezi(base_url='https://api.iletimerkezi.com')"
        assert KEY not in repr(vars(client)) and HASH not in repr(vars(client))
    finally:
        await client.aclose()
    assert client._http.is_closed


# --- provider answers that are not errors ------------------------------------------------------


ROW = {"id": "5", "date": "2026-04-09 11:18:44", "sender": "7889", "number": "+905354104818",
       "text": "ILT AHKTEST RET"}  # fmt: skip


def _inbox_with(orders: Any) -> dict[str, Any]:
    body = inbox_response([])
    body["response"]["orders"] = orders
    return body


@pytest.mark.parametrize(
    ("orders", "rows", "total"),
    [
        ({"totalRows": "1", "order": [ROW]}, [ROW], 1),
        ({"totalRows": 1, "order": [ROW]}, [ROW], 1),
        ({"order": [ROW]}, [ROW], None),
        ({"totalRows": "çok", "order": [ROW]}, [ROW], None),
        ({"totalRows": None, "order": [ROW]}, [ROW], None),
        ({"totalRows": "1", "order": ROW}, [ROW], 1),
        ({"totalRows": "0", "order": None}, [], 0),
        ({"totalRows": "0"}, [], 0),
        ({"totalRows": "0", "order": []}, [], 0),
        (None, [], None),
        ([], [], None),
    ],
    ids=["str", "number", "total-missing", "total-junk", "total-null", "single-object",
         "order-null", "order-missing", "order-empty", "orders-null", "orders-empty-list"],
)  # fmt: skip
async def test_get_inbox_tolerates_drift(
    fake: FakeIletiMerkezi, orders: Any, rows: list[dict[str, Any]], total: int | None
) -> None:
    fake.reply_next("get-inbox", _inbox_with(orders))
    async with client_for(fake) as client:
        assert await client.get_inbox() == Inbox(rows=rows, total_rows=total)


async def test_get_inbox_drops_rows_that_are_not_objects(
    fake: FakeIletiMerkezi, caplog: pytest.LogCaptureFixture
) -> None:
    fake.reply_next("get-inbox", _inbox_with({"totalRows": "3", "order": [ROW, "x", 7]}))
    async with client_for(fake) as client:
        inbox = await client.get_inbox()
    assert inbox.rows == [ROW]
    assert "ignored 2 rows" in caplog.text


@pytest.mark.parametrize("code", ["200", 200, " 200 ", 200.0])
async def test_success_code_as_string_or_number(fake: FakeIletiMerkezi, code: object) -> None:
    body = inbox_response([ROW])
    body["response"]["status"]["code"] = code
    fake.reply_next("get-inbox", body)
    async with client_for(fake) as client:
        assert (await client.get_inbox()).rows == [ROW]


async def test_send_sms_order_id_as_number(fake: FakeIletiMerkezi) -> None:
    fake.reply_next("send-sms", {"response": {"status": {"code": 200}, "order": {"id": 123}}})
    async with client_for(fake) as client:
        assert await client.send_sms(sender="ACME", text="x", numbers=["5354104818"]) == "123"


# --- the totalRows warning ---------------------------------------------------------------------


async def test_total_rows_warning_once_per_change(
    fake: FakeIletiMerkezi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="keyrouter.client")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "keyrouter.client"]

    fake.add_message("a")
    fake.add_message("b")
    fake.total_rows = 5
    async with client_for(fake) as client:
        for _ in range(3):
            assert (await client.get_inbox()).shortfall == 3
        assert len(warnings()) == 1
        assert "returned 2 rows but totalRows is 5" in warnings()[0]
        assert all(r.levelno == logging.WARNING for r in caplog.records)

        fake.total_rows = 6
        await client.get_inbox()
        await client.get_inbox()
        assert len(warnings()) == 2
        assert "returned 2 rows but totalRows is 6" in warnings()[1]

        fake.total_rows = None  # the provider caught up: no warning, and the memory resets
        await client.get_inbox()
        fake.total_rows = 6
        await client.get_inbox()
        assert len(warnings()) == 3


# --- status codes -> exception classes ---------------------------------------------------------


def _expected_class(code: int) -> type[ApiError]:
    if code == 401:
        return AuthenticationRefused
    return TransientApiError if code >= 500 or code in (408, 429) else PermanentApiError


ALL_CODES = sorted(set(STATUS_CODES) - {200} | {418, 408, 429, 500, 502, 504})


@pytest.mark.parametrize("code", ALL_CODES)
async def test_every_status_code_class(fake: FakeIletiMerkezi, code: int) -> None:
    fake.fail_next("get-inbox", code)
    async with client_for(fake) as client:
        error = await raised(client.get_inbox)
    assert type(error) is _expected_class(code)
    assert error.code == code
    assert str(code) in str(error)
    if code in STATUS_CODES:
        assert STATUS_CODES[code] in str(error)


@pytest.mark.parametrize("as_string", [False, True], ids=["number", "string"])
async def test_401_names_the_three_causes(fake: FakeIletiMerkezi, as_string: bool) -> None:
    fake.key = "another-key"
    fake.code_as_string = as_string
    async with client_for(fake) as client:
        error = await raised(client.get_inbox)
    assert type(error) is AuthenticationRefused
    assert error.code == 401
    assert error.provider_message == "Üyelik bilgileri hatalı"
    text = str(error)
    assert AUTH_HELP in text
    for cause in ("key or hash is wrong", "Allow API access", "Access Permissions", "IP allowlist",
                  "Retrying does not help"):  # fmt: skip
        assert cause in text


async def test_permanent_codes_from_the_provider_logic(fake: FakeIletiMerkezi) -> None:
    async with client_for(fake) as client:
        assert (await raised(lambda: client.add_blacklist("7889"))).code == 466
        assert (await raised(lambda: client.delete_blacklist("5354104818"))).code == 474
        await client.send_sms(sender="ACME", text="Tamam", numbers=["5354104818"])
        again = await raised(
            lambda: client.send_sms(sender="ACME", text="Tamam", numbers=["5354104818"])
        )
        assert again.code == DUPLICATE_SMS == 451
        await client.add_blacklist("5551234567")
        blocked = await raised(
            lambda: client.send_sms(sender="ACME", text="x", numbers=["5551234567"])
        )
        assert blocked.code == 452
        fake.fail_next("send-sms", 402)
        broke = await raised(
            lambda: client.send_sms(sender="ACME", text="y", numbers=["5354104818"])
        )
        assert broke.code == 402
    for error in (again, blocked, broke):
        assert type(error) is PermanentApiError


@pytest.mark.parametrize("kind", [503, 500, "html502", "truncated", "reset"])
async def test_transient_faults(fake: FakeIletiMerkezi, kind: int | str) -> None:
    fake.fail_next("get-inbox", kind)
    async with client_for(fake) as client:
        assert type(await raised(client.get_inbox)) is TransientApiError
        assert (await client.get_inbox()).total_rows == 0  # and the next call is fine


async def test_slow_answer_past_read_timeout(fake: FakeIletiMerkezi) -> None:
    fake.fail_next("get-inbox", "slow:1")
    async with client_for(fake) as client:
        started = time.monotonic()
        error = await raised(client.get_inbox)
    assert type(error) is TransientApiError
    assert error.code is None
    assert time.monotonic() - started < 0.9


async def test_connection_refused_is_transient() -> None:
    with FakeIletiMerkezi(KEY, HASH) as gone:
        base_url = gone.base_url
    async with IletiMerkezi(KEY, HASH, base_url=base_url, timeout=FAST) as client:
        error = await raised(client.get_inbox)
    assert type(error) is TransientApiError


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("get-inbox", {"response": {}}),
        ("get-inbox", {"answer": "ok"}),
        ("get-inbox", {"response": {"status": {"code": "tamam"}}}),
        ("get-inbox", _inbox_with("junk")),
        ("get-inbox", _inbox_with({"order": "junk"})),
        ("send-sms", {"response": {"status": {"code": 200}}}),
        ("send-sms", {"response": {"status": {"code": 200}, "order": {"id": None}}}),
    ],
)
async def test_200_without_expected_structure_is_transient(
    fake: FakeIletiMerkezi, endpoint: str, body: dict[str, Any]
) -> None:
    fake.reply_next(endpoint, body)
    async with client_for(fake) as client:
        call = client.get_inbox if endpoint == "get-inbox" else (
            lambda: client.send_sms(sender="ACME", text="x", numbers=["5354104818"])
        )  # fmt: skip
        assert type(await raised(call)) is TransientApiError


async def test_body_code_wins_over_http_status(fake: FakeIletiMerkezi) -> None:
    fake.reply_next("get-inbox", {"response": {"status": {"code": "503"}}}, status=200)
    async with client_for(fake) as client:
        error = await raised(client.get_inbox)
    assert (type(error), error.code) == (TransientApiError, 503)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, TransientApiError), (503, TransientApiError), (404, PermanentApiError),
     (401, AuthenticationRefused)],
)  # fmt: skip
async def test_html_bodies_classified_by_http_status(
    fake: FakeIletiMerkezi, status: int, expected: type[ApiError]
) -> None:
    fake.reply_next("get-inbox", "<html><body>Hata</body></html>", status=status)
    async with client_for(fake) as client:
        error = await raised(client.get_inbox)
    assert (type(error), error.code) == (expected, status)


async def test_wrong_base_path_is_permanent_404(fake: FakeIletiMerkezi) -> None:
    async with IletiMerkezi(KEY, HASH, base_url=fake.base_url + "/nope", timeout=FAST) as client:
        error = await raised(client.get_inbox)
    assert (type(error), error.code) == (PermanentApiError, 404)


async def test_unsupported_scheme_is_permanent() -> None:
    async with IletiMerkezi(KEY, HASH, base_url="ftp://example.invalid") as client:
        assert type(await raised(client.get_inbox)) is PermanentApiError


def test_errors_pickle_with_their_fields() -> None:
    error = PermanentApiError("x", code=474, provider_message="y", endpoint="delete-blacklist")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.code, copy.provider_message, copy.endpoint) == (
        PermanentApiError, "x", 474, "y", "delete-blacklist"
    )  # fmt: skip


# --- secrets -------------------------------------------------------------------------------------


def _chain_text(error: BaseException) -> str:
    parts, seen, todo = [], set(), [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        parts += [str(current), repr(current), repr(vars(current))]
        request = getattr(current, "_request", None)  # httpx errors keep the request, body included
        if isinstance(request, httpx.Request):
            parts.append(request.content.decode())
        todo += [current.__cause__, current.__context__]
    parts.append("".join(traceback.format_exception(error)))
    return "\n".join(parts)


def _setup_auth(fake: FakeIletiMerkezi) -> None:
    fake.key = "other"


def _echo_secret(fake: FakeIletiMerkezi) -> None:  # a provider (or proxy) that echoes the request
    fake.reply_next(
        "get-inbox", {"response": {"status": {"code": 400, "message": f"bad {KEY} {HASH}"}}}
    )


SCENARIOS: dict[str, Callable[[FakeIletiMerkezi], None]] = {
    "401": _setup_auth,
    "474": lambda fake: fake.fail_next("get-inbox", 474),
    "503": lambda fake: fake.fail_next("get-inbox", 503),
    "html502": lambda fake: fake.fail_next("get-inbox", "html502"),
    "truncated": lambda fake: fake.fail_next("get-inbox", "truncated"),
    "reset": lambda fake: fake.fail_next("get-inbox", "reset"),
    "timeout": lambda fake: fake.fail_next("get-inbox", "slow:1"),
    "structure": lambda fake: fake.reply_next("get-inbox", {"response": {}}),
    "echo": _echo_secret,
    "refused": lambda fake: fake.stop(),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_secrets_never_leak(
    fake: FakeIletiMerkezi, caplog: pytest.LogCaptureFixture, scenario: str
) -> None:
    caplog.set_level(logging.DEBUG)
    for chatty in ("httpx", "httpcore"):  # the CLI quiets them; here we want every word they say
        caplog.set_level(logging.DEBUG, logger=chatty)
    base_url = fake.base_url
    SCENARIOS[scenario](fake)
    async with IletiMerkezi(KEY, HASH, base_url=base_url, timeout=FAST) as client:
        error = await raised(client.get_inbox)
        text = "\n".join([_chain_text(error), caplog.text, repr(client)])
    assert caplog.records, "the scenario should have logged something (httpx/httpcore debug)"
    assert KEY not in text
    assert HASH not in text
    if scenario == "echo":
        assert "bad *** ***" in str(error)
