"""The İYS client against the fake İYS over real HTTP: token sharing and refresh, retries,
every scripted failure mapped to success, retry-later or permanent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from keyrouter.providers.iys import (
    ALREADY,
    NOTHING_TO_WITHDRAW,
    RECORDED,
    Consent,
    IysClient,
    IysRefused,
    IysUnavailable,
)
from keyrouter.retries import PermanentError, RetryLater
from keyrouter.testing import FakeIys

pytestmark = pytest.mark.anyio

NUMBER = "+905354104818"


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeIys]:
    with FakeIys(token_ttl=3600, clock=clock) as server:
        yield server


@pytest.fixture
async def iys(fake: FakeIys, clock: Clock) -> AsyncIterator[IysClient]:
    async with IysClient(fake.username, fake.password, fake.iys_code, fake.brand_code, fake.base_url,
                         timeout=5, backoff=0.01, clock=clock) as client:
        yield client


def ret(number: str = NUMBER, date: str = "2026-11-27 14:05:09") -> Consent:
    return Consent(recipient=number, status="RET", consent_date=date)


def onay(number: str = NUMBER, date: str = "2026-11-20 09:00:00") -> Consent:
    return Consent(recipient=number, status="ONAY", consent_date=date)


def consent_requests(fake: FakeIys) -> list:
    return [r for r in fake.requests if r.endpoint == "consents"]


async def test_token_request_and_consent_body(fake: FakeIys, iys: IysClient) -> None:
    result = await iys.add_consent(onay())
    assert result.outcome == RECORDED and result.transaction_id == fake.records[0]["transactionId"]
    token_req, consent_req = fake.requests
    assert token_req.endpoint == "token"
    assert token_req.body == {"grant_type": "password", "username": fake.username, "password": fake.password}
    assert consent_req.body == {"recipient": NUMBER, "type": "MESAJ", "source": "HS_MESAJ",
                                "status": "ONAY", "consentDate": "2026-11-20 09:00:00",
                                "recipientType": "BIREYSEL"}
    assert consent_req.authorization and consent_req.authorization.startswith("Bearer ")
    assert NUMBER not in repr(iys) and fake.password not in repr(iys)


async def test_one_token_for_100_concurrent_calls(fake: FakeIys, iys: IysClient) -> None:
    numbers = [f"+90555{i:07d}" for i in range(100)]
    results = await asyncio.gather(*(iys.add_consent(onay(n)) for n in numbers))
    assert {r.outcome for r in results} == {RECORDED}
    assert fake.token_requests == ["password"] and iys.token_requests == 1
    assert len(fake.records) == 100
    assert len({r.authorization for r in consent_requests(fake)}) == 1


async def test_refreshed_before_expiry_with_the_refresh_token(
    fake: FakeIys, iys: IysClient, clock: Clock
) -> None:
    await iys.add_consent(onay("+905550000001"))
    clock.t += 3600 - 30  # inside the last minute of the token's life: refresh ahead
    await iys.add_consent(onay("+905550000002"))
    assert fake.token_requests == ["password", "refresh_token"]
    first, second = (r.authorization for r in consent_requests(fake))
    assert first != second
    clock.t += 3 * 3600  # token and refresh token both gone: log in again
    await iys.add_consent(onay("+905550000003"))
    assert fake.token_requests == ["password", "refresh_token", "password"]


@pytest.mark.parametrize("kind", ["expired", 401])
async def test_a_401_gets_one_new_token(fake: FakeIys, iys: IysClient, kind: object) -> None:
    await iys.add_consent(onay("+905550000001"))
    fake.fail_next("consents", kind)  # type: ignore[arg-type]
    result = await iys.add_consent(onay("+905550000002"))
    assert result.outcome == RECORDED
    assert fake.token_requests == ["password", "password"]
    assert len(fake.records) == 2


async def test_concurrent_401s_share_the_new_token(fake: FakeIys, iys: IysClient) -> None:
    await iys.add_consent(onay("+905550000000"))
    fake.expire_tokens()
    await asyncio.gather(*(iys.add_consent(onay(f"+9055500000{i:02d}")) for i in range(1, 21)))
    assert fake.token_requests == ["password", "password"]


async def test_a_second_401_is_permanent(fake: FakeIys, iys: IysClient) -> None:
    fake.fail_next("consents", 401, times=2)
    with pytest.raises(IysRefused) as caught:
        await iys.add_consent(onay())
    assert isinstance(caught.value, PermanentError) and caught.value.status == 401
    assert fake.records == []


async def test_wrong_password_is_permanent_and_says_which_setting(fake: FakeIys, clock: Clock) -> None:
    async with IysClient(fake.username, "wrong-Pa55", fake.iys_code, fake.brand_code, fake.base_url,
                         clock=clock) as client:
        with pytest.raises(IysRefused) as caught:
            await client.add_consent(onay())
    text = str(caught.value)
    assert "IYS_PASSWORD" in text and "wrong-Pa55" not in text and fake.password not in text
    assert caught.value.__cause__ is None and caught.value.__context__ is None


async def test_429_waits_as_long_as_retry_after_says(fake: FakeIys, iys: IysClient) -> None:
    fake.fail_next("consents", 429, retry_after="1")
    started = time.monotonic()
    result = await iys.add_consent(onay())
    assert result.outcome == RECORDED
    assert time.monotonic() - started >= 0.95
    assert len(consent_requests(fake)) == 2


async def test_a_long_retry_after_goes_back_to_the_dispatcher(fake: FakeIys, iys: IysClient) -> None:
    fake.fail_next("consents", 429, retry_after="120")
    started = time.monotonic()
    with pytest.raises(IysUnavailable) as caught:
        await iys.add_consent(onay())
    assert isinstance(caught.value, RetryLater) and caught.value.retry_after == 120
    assert time.monotonic() - started < 30  # no waiting here: the dispatcher schedules it
    assert len(consent_requests(fake)) == 1


async def test_5xx_is_retried_with_backoff(fake: FakeIys, iys: IysClient) -> None:
    fake.fail_next("consents", 503, times=2)
    assert (await iys.add_consent(onay())).outcome == RECORDED
    assert len(consent_requests(fake)) == 3
    fake.fail_next("consents", 500, times=3)
    with pytest.raises(IysUnavailable) as caught:
        await iys.add_consent(onay("+905550000009"))
    assert "HTTP 500" in str(caught.value)


async def test_token_endpoint_5xx_and_reset_are_retried(fake: FakeIys, iys: IysClient) -> None:
    fake.fail_next("token", 502)
    fake.fail_next("consents", "reset")
    assert (await iys.add_consent(onay())).outcome == RECORDED
    assert [r.endpoint for r in fake.requests] == ["token", "token", "consents", "consents"]
    assert iys.token_requests == 1 and len(fake.records) == 1


async def test_ret_without_a_record_is_nothing_to_withdraw(fake: FakeIys, iys: IysClient) -> None:
    result = await iys.add_consent(ret())
    assert result.outcome == NOTHING_TO_WITHDRAW and result.transaction_id is None
    assert "H175" in (result.detail or "")
    assert fake.records == []


async def test_ret_after_an_onay_is_recorded(fake: FakeIys, iys: IysClient) -> None:
    fake.add_record(NUMBER, "ONAY")
    result = await iys.add_consent(ret())
    assert result.outcome == RECORDED
    assert fake.held(NUMBER)["status"] == "RET"


async def test_a_duplicate_is_already_held(fake: FakeIys, iys: IysClient) -> None:
    fake.add_record(NUMBER, "ONAY")
    assert (await iys.add_consent(ret())).outcome == RECORDED
    again = await iys.add_consent(ret())
    assert again.outcome == ALREADY and "H174" in (again.detail or "")
    assert len(fake.records) == 2


async def test_scripted_duplicate_and_no_record(fake: FakeIys, iys: IysClient) -> None:
    fake.add_record(NUMBER, "RET")
    fake.fail_next("consents", "duplicate")
    assert (await iys.add_consent(ret())).outcome == ALREADY
    fake.fail_next("consents", "no_record")
    assert (await iys.add_consent(ret("+905550000001"))).outcome == NOTHING_TO_WITHDRAW
    # The same refusal for an ONAY is no success: nothing was recorded and İYS says why.
    fake.fail_next("consents", "no_record")
    with pytest.raises(IysRefused) as caught:
        await iys.add_consent(onay("+905550000002"))
    assert "H175" in str(caught.value) and "RET olmamalıdır" in str(caught.value)


async def test_other_4xx_is_permanent_with_iys_text(fake: FakeIys, clock: Clock) -> None:
    async with IysClient(fake.username, fake.password, fake.iys_code, "999999", fake.base_url,
                         clock=clock) as client:
        with pytest.raises(IysRefused) as caught:
            await client.add_consent(onay())
    assert caught.value.status == 404 and "check IYS_BRAND_CODE" in str(caught.value)
    assert fake.records == []


@pytest.mark.parametrize("field", ["iys_code", "brand_code"])
async def test_a_wrong_code_never_counts_as_nothing_to_withdraw(fake: FakeIys, clock: Clock,
                                                                 field: str) -> None:
    """A RET under a mistyped code: every brand path answers 404, the status query too; that is
    a refusal naming the variable, never "nothing to withdraw"."""
    codes = {"iys_code": fake.iys_code, "brand_code": fake.brand_code, field: "999999"}
    async with IysClient(fake.username, fake.password, codes["iys_code"], codes["brand_code"],
                         fake.base_url, clock=clock) as client:
        with pytest.raises(IysRefused) as caught:
            await client.add_consent(ret())
        with pytest.raises(IysRefused) as status:
            await client.consent_status(ret())
    variable = "IYS_CODE" if field == "iys_code" else "IYS_BRAND_CODE"
    assert f"check {variable}" in str(caught.value) and f"check {variable}" in str(status.value)
    assert fake.records == []


async def test_a_bare_404_is_never_nothing_to_withdraw(fake: FakeIys, clock: Clock) -> None:
    """An unknown path (a base URL pointing elsewhere) answers 404 without İYS's error body."""
    async with IysClient(fake.username, fake.password, fake.iys_code, fake.brand_code,
                         fake.base_url + "/elsewhere", clock=clock) as client:
        client._token, client._expires = "t", float("inf")  # the token endpoint moved too
        with pytest.raises(IysRefused) as caught:
            await client.add_consent(ret())
    assert caught.value.status == 404 and "IYS_BASE_URL" in str(caught.value)


async def test_check_first_sends_nothing_when_the_decision_is_held(fake: FakeIys, iys: IysClient) -> None:
    fake.add_record(NUMBER, "RET")
    result = await iys.add_consent(ret(), check_first=True)
    assert result.outcome == ALREADY
    assert consent_requests(fake) == [] and [r.endpoint for r in fake.requests] == ["token", "status"]
    assert fake.requests[-1].body == {"recipient": NUMBER, "type": "MESAJ", "recipientType": "BIREYSEL"}
    assert (await iys.add_consent(onay(), check_first=True)).outcome == RECORDED
