"""The fake provider's own behaviours, seen over plain HTTP (sync httpx, no keyrouter client)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keyrouter.testing import ENDPOINTS, FakeIletiMerkezi, SentSms, inbox_response

AUTH = {"key": "test-key", "hash": "test-hash"}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(2.0), verify=False) as client:
        yield client


def post(
    http: httpx.Client,
    fake: FakeIletiMerkezi,
    endpoint: str,
    auth: dict[str, str] = AUTH,
    **fields: Any,
) -> tuple[int, Any]:
    body = {"request": {"authentication": auth, **fields}}
    answer = http.post(f"{fake.base_url}/v1/{endpoint}/json", json=body)
    try:
        return answer.status_code, answer.json()
    except ValueError:
        return answer.status_code, None


def code(document: dict[str, Any]) -> Any:
    return document["response"]["status"]["code"]


def order(**changes: Any) -> dict[str, Any]:
    base = {"sender": "ACME", "sendDateTime": [], "iys": "0", "iysList": "BIREYSEL",
            "message": {"text": "Merhaba", "receipents": {"number": ["905354104818"]}}}  # fmt: skip
    base.update(changes)
    return base


# --- shapes --------------------------------------------------------------------------------------


def test_inbox_response_is_the_providers_shape() -> None:
    row = {"id": "5", "date": "2026-04-09 11:18:44", "sender": "7889", "number": "+905354104818",
           "text": "ILT AHKTEST RET"}  # fmt: skip
    assert inbox_response([row]) == {
        "response": {
            "status": {"code": 200, "message": "İşlem başarılı"},
            "orders": {"totalRows": "1", "order": [row]},
        }
    }
    assert inbox_response([], total_rows=1500)["response"]["orders"]["totalRows"] == "1500"
    json.dumps(inbox_response([row]))  # ready for a saved file


def test_get_inbox_serves_the_mutable_inbox(fake: FakeIletiMerkezi, http: httpx.Client) -> None:
    assert post(http, fake, "get-inbox") == (200, inbox_response([]))
    row = fake.add_message("RET", sender="05354104818", number="7889", date="2026-04-09 11:18:44")
    fake.inbox.append({"id": "x"})
    _, document = post(http, fake, "get-inbox")
    assert document["response"]["orders"] == {"totalRows": "2", "order": [row, {"id": "x"}]}
    fake.total_rows = 1500
    assert post(http, fake, "get-inbox")[1]["response"]["orders"]["totalRows"] == "1500"


def test_add_message_rows_have_unique_ids(fake: FakeIletiMerkezi) -> None:
    rows = [fake.add_message(f"m{i}") for i in range(5)]
    assert len({row["id"] for row in rows}) == 5
    assert set(rows[0]) == {"id", "date", "sender", "number", "text"}
    assert len(rows[0]["date"]) == len("2026-04-09 11:18:44")


def test_status_code_as_string(fake: FakeIletiMerkezi, http: httpx.Client) -> None:
    fake.code_as_string = True
    assert code(post(http, fake, "get-inbox")[1]) == "200"
    assert code(post(http, fake, "get-inbox", auth={"key": "no", "hash": "no"})[1]) == "401"


# --- requests the provider refuses ---------------------------------------------------------------


@pytest.mark.parametrize(
    "auth", [{"key": "test-key", "hash": "bad"}, {"key": "bad", "hash": "test-hash"}, {}]
)
def test_wrong_credentials_answer_401(
    fake: FakeIletiMerkezi, http: httpx.Client, auth: dict[str, str]
) -> None:
    status, document = post(http, fake, "get-inbox", auth=auth)
    assert status == code(document) == 401
    assert document["response"]["status"]["message"] == "Üyelik bilgileri hatalı"


def test_malformed_and_unknown_requests(fake: FakeIletiMerkezi, http: httpx.Client) -> None:
    assert http.post(f"{fake.base_url}/v1/get-inbox/json", content=b"{nope").status_code == 400
    assert http.post(f"{fake.base_url}/v1/get-inbox/json", json=[1]).status_code == 400
    assert post(http, fake, "get-outbox")[0] == 404
    assert http.get(f"{fake.base_url}/v1/get-inbox/json").status_code == 404
    assert [r.endpoint for r in fake.requests][-1] == "/v1/get-inbox/json"  # raw path when unknown


# --- blacklist -----------------------------------------------------------------------------------


def test_blacklist_add_delete(fake: FakeIletiMerkezi, http: httpx.Client) -> None:
    for form in ("905354104818", "+905354104818", "5354104818"):
        assert post(http, fake, "add-blacklist", blacklist={"number": form})[0] == 200
    assert fake.blacklist == {"+905354104818"}
    assert post(http, fake, "add-blacklist", blacklist={"number": "7889"})[0] == 466
    assert post(http, fake, "delete-blacklist", blacklist={"number": "12"})[0] == 466
    assert post(http, fake, "delete-blacklist", blacklist={"number": "905354104818"})[0] == 200
    status, document = post(http, fake, "delete-blacklist", blacklist={"number": "905354104818"})
    assert status == 474
    assert (
        document["response"]["status"]["message"] == "Bu numara üzerindeki engelleme kaldırılamaz"
    )


def test_get_blacklist_pages(http: httpx.Client) -> None:
    numbers = [f"+90535000{i:04d}" for i in range(5)]
    with FakeIletiMerkezi(blacklist=numbers) as fake:
        status, document = post(
            http, fake, "get-blacklist", blacklist={"page": "2", "rowCount": "2"}
        )
        assert status == 200
        assert document["response"]["blacklist"] == {"count": 5, "number": numbers[2:4]}
        assert post(http, fake, "get-blacklist")[1]["response"]["blacklist"]["number"] == numbers


# --- send-sms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sender": ""}, 459),
        ({"sender": "ABCDEFGHIJKL"}, 460),
        ({"sender": "ŞİRKET"}, 460),
        ({"iys": None}, 468),
        ({"iys": "1", "iysList": "HERKES"}, 469),
        ({"message": {"text": "", "receipents": {"number": ["905354104818"]}}}, 454),
        ({"message": {"text": "x" * 1100, "receipents": {"number": ["905354104818"]}}}, 453),
        ({"message": {"text": "x", "receipents": {"number": ["7889"]}}}, 452),
        ({"message": {"text": "x", "receipents": {"number": []}}}, 452),
        ({"message": {"text": "x", "recipients": {"number": ["905354104818"]}}}, 452),
    ],
)
def test_send_sms_validation(
    fake: FakeIletiMerkezi, http: httpx.Client, changes: dict[str, Any], expected: int
) -> None:
    status, document = post(http, fake, "send-sms", order=order(**changes))
    assert status == code(document) == expected
    assert fake.sent == []


def test_send_sms_records_and_refuses_duplicates_and_blacklisted(http: httpx.Client) -> None:
    now = [1000.0]
    with FakeIletiMerkezi(blacklist=["+905551234567"], clock=lambda: now[0]) as fake:
        status, document = post(http, fake, "send-sms", order=order())
        assert status == 200
        assert fake.sent == [
            SentSms(document["response"]["order"]["id"], "ACME", "Merhaba", ("+905354104818",),
                    "0", "BIREYSEL", 1000.0)
        ]  # fmt: skip
        assert post(http, fake, "send-sms", order=order())[0] == 451
        now[0] += 601
        assert post(http, fake, "send-sms", order=order())[0] == 200
        blocked = {"text": "x", "receipents": {"number": ["905354104818", "905551234567"]}}
        assert post(http, fake, "send-sms", order=order(message=blocked))[0] == 452
        assert len(fake.sent) == 2


def test_approved_senders(http: httpx.Client) -> None:
    with FakeIletiMerkezi(approved_senders={"ACME"}) as fake:
        assert post(http, fake, "send-sms", order=order(sender="OTHER"))[0] == 450
        assert post(http, fake, "send-sms", order=order())[0] == 200


# --- faults --------------------------------------------------------------------------------------


def test_fail_next_validates(fake: FakeIletiMerkezi) -> None:
    for kind in ("slow", "slow:x", "boom", 200, 42, True):
        with pytest.raises(ValueError):
            fake.fail_next("get-inbox", kind)
    with pytest.raises(ValueError):
        fake.fail_next("get-outbox", 503)


def test_faults_are_consumed_in_order(fake: FakeIletiMerkezi, http: httpx.Client) -> None:
    fake.fail_next("get-inbox", 503, times=2)
    fake.fail_next("get-inbox", "html502")
    fake.fail_next("send-sms", 402)
    assert post(http, fake, "get-inbox")[0] == 503
    assert post(http, fake, "get-blacklist")[0] == 200  # faults are per endpoint
    assert code(post(http, fake, "get-inbox")[1]) == 503
    answer = http.post(f"{fake.base_url}/v1/get-inbox/json", json={})
    assert answer.status_code == 502
    assert answer.headers["content-type"].startswith("text/html")
    assert post(http, fake, "get-inbox")[0] == 200
    assert [r.endpoint for r in fake.requests].count("get-inbox") == 4  # faulted ones recorded


def test_error_faults_do_not_apply_the_request(fake: FakeIletiMerkezi, http: httpx.Client) -> None:
    fake.fail_next("add-blacklist", 503)
    fake.fail_next("add-blacklist", "reset")
    assert post(http, fake, "add-blacklist", blacklist={"number": "5354104818"})[0] == 503
    with pytest.raises(httpx.TransportError):
        post(http, fake, "add-blacklist", blacklist={"number": "5354104818"})
    assert fake.blacklist == set()


def test_truncated_applies_then_cuts_the_answer(fake: FakeIletiMerkezi, http: httpx.Client) -> None:
    fake.fail_next("send-sms", "truncated")
    status, document = post(http, fake, "send-sms", order=order())
    assert (status, document) == (200, None)
    assert len(fake.sent) == 1  # the provider did the work; only the answer was lost
    assert post(http, fake, "send-sms", order=order())[0] == 451


def test_reply_next_sends_a_given_body(fake: FakeIletiMerkezi, http: httpx.Client) -> None:
    fake.reply_next("get-inbox", {"response": {"status": {"code": "200"}, "orders": None}})
    fake.reply_next("get-inbox", "<html>oops</html>", status=503)
    assert post(http, fake, "get-inbox") == (
        200,
        {"response": {"status": {"code": "200"}, "orders": None}},
    )
    answer = http.post(f"{fake.base_url}/v1/get-inbox/json", json={})
    assert (answer.status_code, answer.text) == (503, "<html>oops</html>")


def test_slow_answers_after_the_delay(fake: FakeIletiMerkezi, http: httpx.Client) -> None:
    fake.fail_next("get-inbox", "slow:0.2")
    started = time.monotonic()
    assert post(http, fake, "get-inbox")[0] == 200
    assert 0.2 <= time.monotonic() - started < 1.5


def test_stop_is_prompt_during_a_slow_answer() -> None:
    fake = FakeIletiMerkezi().start()
    fake.fail_next("get-inbox", "slow:30")
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(httpx.post(f"{fake.base_url}/v1/get-inbox/json", json={}, timeout=10))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    while not fake.requests:
        time.sleep(0.01)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1
    caller.join(timeout=2)
    assert not caller.is_alive()
    assert isinstance(outcome[0], httpx.TransportError)  # dropped, not answered


def test_stop_cuts_kept_alive_connections(http: httpx.Client) -> None:
    fake = FakeIletiMerkezi().start()
    url = f"{fake.base_url}/v1/get-inbox/json"
    assert post(http, fake, "get-inbox")[0] == 200  # the connection stays open in `http`'s pool
    fake.stop()
    fake.stop()  # idempotent
    with pytest.raises(httpx.TransportError):
        http.post(url, json={})
    assert fake.connections == 1
    assert len(fake.requests) == 1  # nothing was served after stop()


# --- life cycle, threads, processes --------------------------------------------------------------


def test_life_cycle_errors() -> None:
    fake = FakeIletiMerkezi()
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    with fake:
        with pytest.raises(RuntimeError):
            fake.start()
        assert fake.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError):
        _ = fake.base_url


def test_concurrent_clients(fake: FakeIletiMerkezi) -> None:
    def work(worker: int) -> None:
        with httpx.Client(timeout=5) as client:
            for i in range(25):
                number = f"90535{worker:03d}{i:04d}"
                answer = client.post(
                    f"{fake.base_url}/v1/add-blacklist/json",
                    json={"request": {"authentication": AUTH, "blacklist": {"number": number}}},
                )
                assert answer.status_code == 200
                fake.add_message(f"{worker}-{i}")  # tests mutate the inbox while it serves

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake.blacklist) == len(fake.requests) == len(fake.inbox) == 200


def test_usable_from_another_process(fake: FakeIletiMerkezi) -> None:
    fake.add_message("RET")
    script = textwrap.dedent(
        """
        import sys, httpx
        body = {"request": {"authentication": {"key": "test-key", "hash": "test-hash"}}}
        answer = httpx.post(sys.argv[1] + "/v1/get-inbox/json", json=body, timeout=5)
        print(answer.json()["response"]["orders"]["order"][0]["text"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, fake.base_url], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RET"
    assert [r.endpoint for r in fake.requests] == ["get-inbox"]


def test_endpoints_listed() -> None:
    assert ENDPOINTS == (
        "get-inbox",
        "add-blacklist",
        "delete-blacklist",
        "get-blacklist",
        "send-sms",
        "get-balance",
        "get-sender",
    )
