"""The dashboard over HTTP with Starlette's TestClient: every page, filter, download, auth rule,
the CSRF check and the security headers."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis_dbs import WEB_URL
from starlette.testclient import TestClient

from keyrouter.store.memory import MemoryStore

from .conftest import IMG_XSS, NUMBER, T0, TOKEN, XSS

HTML = {"accept": "text/html"}
BEARER = {"authorization": f"Bearer {TOKEN}"}
MASKED = "+90532***4567"


@pytest.fixture
def open_client(make_app: Callable[..., Any]) -> Iterator[TestClient]:
    with TestClient(make_app()) as client:
        yield client


@pytest.fixture
def token_client(make_app: Callable[..., Any]) -> Iterator[TestClient]:
    with TestClient(make_app(token=TOKEN)) as client:
        yield client


def sign_in(client: TestClient, name: str = "Ayşe") -> None:
    r = client.post("/login", data={"token": TOKEN, "name": name, "next": "/dead-letters"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/dead-letters"


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


# -- pages --------------------------------------------------------------------------------------

def test_status_page(open_client: TestClient, rules_path: Any) -> None:
    r = open_client.get("/")
    assert r.status_code == 200
    assert '<div class="big" id="held">60</div>' in r.text
    info = open_client.app.state.dashboard.rules  # type: ignore[attr-defined]
    from keyrouter.worker.reload import rules_version

    assert info.version == rules_version(rules_path) and info.version in r.text
    assert str(rules_path) in r.text and info.files[0][1] in r.text
    assert "Last poll" in r.text and "no poll recorded yet" in r.text
    assert "no message finished in the last 24 hours" in r.text
    assert "none: no fetched message waits" in r.text  # inbox lag: no shared rows
    assert "changed on disk" not in r.text
    rules_path.write_text(rules_path.read_text() + "\n# edited\n")
    assert "changed on disk" in open_client.get("/").text


def test_status_page_shows_the_last_poll_and_messages_per_rule(make_app: Callable[..., Any]) -> None:
    import time

    from keyrouter.timefmt import display as turkey_time

    store = MemoryStore("web-activity")
    now = time.time()
    hour = int(now // 3600)
    asyncio.run(store.record_poll(now - 90, 37))
    asyncio.run(store.count_routed({("anket", hour): 5, ("anket", hour - 3): 2, (XSS, hour): 1,
                                    ("iptal", hour - 23): 4, ("eski", hour - 30): 99}))
    with TestClient(make_app(store=store)) as client:
        r = client.get("/")
    assert r.status_code == 200
    poll = re.search(r'<td id="last-poll">(.*?)</td>', r.text, re.S)
    assert poll, r.text
    assert turkey_time(now - 90) in poll.group(1) and "+03:00" in poll.group(1)
    assert "37 rows" in poll.group(1) and re.search(r"\((90|9[1-9]|1[0-9]{2}) s ago", poll.group(1))
    bars = dict(re.findall(r'data-choice="([^"]*)" data-votes="(\d+)"', r.text))
    assert bars == {"anket": "7", "iptal": "4", html.escape(XSS): "1"}  # 30 h ago is outside
    hours = re.search(r'<table class="list" id="routed-hours">(.*?)</table>', r.text, re.S)
    assert hours and turkey_time(hour * 3600)[:16] in hours.group(1)
    assert turkey_time((hour - 23) * 3600)[:16] in hours.group(1)
    assert turkey_time((hour - 30) * 3600)[:16] not in hours.group(1)
    assert XSS not in r.text and html.escape(XSS) in r.text  # a rule name is shown as text


def test_surveys_page_draws_one_bar_per_declared_choice(open_client: TestClient) -> None:
    r = open_client.get("/surveys")
    assert r.status_code == 200
    spring = r.text.split('data-survey="spring-2026"')[1].split("</section>")[0]
    bars = re.findall(r'<rect class="bar" [^>]*width="([\d.]+)"[^>]*data-choice="(\w+)" data-votes="(\d+)"',
                      spring)
    assert [(c, int(n)) for _, c, n in bars] == [("a", 3), ("b", 1), ("c", 0)]
    widths = {c: float(w) for w, c, _ in bars}
    assert widths["c"] == 0 and widths["a"] == 3 * widths["b"] > 0
    assert '<td class="voters">4</td>' in spring and '<td class="rejected">1</td>' in spring
    assert "3 (75.0%)" in spring and "0 (0.0%)" in spring
    assert "2026-09-21 17:14:20 +03:00" in spring  # last vote, Turkey time
    nps = r.text.split('data-survey="nps"')[1]
    assert 'data-choice="9" data-votes="1"' in nps and "undeclared" in nps


def test_survey_csv(open_client: TestClient) -> None:
    r = open_client.get("/surveys/spring-2026.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["survey", "choice", "votes", "percent", "declared"]
    assert rows[1:4] == [["spring-2026", "a", "3", "75.0", "yes"], ["spring-2026", "b", "1", "25.0", "yes"],
                         ["spring-2026", "c", "0", "0.0", "yes"]]
    assert ["voters", "4"] in rows and ["rejected", "1"] in rows
    assert open_client.get("/surveys/unknown.csv").status_code == 404


def ledger_ids(html: str) -> list[str]:
    return re.findall(r"<td><code>(m\d{4})</code></td>", html)


def test_optouts_newest_first_masked_and_paged(open_client: TestClient) -> None:
    r = open_client.get("/optouts")
    assert r.status_code == 200
    ids = ledger_ids(r.text)
    assert ids == [f"m{i:04d}" for i in range(119, 69, -1)]  # 50, newest first
    assert NUMBER not in r.text and MASKED in r.text
    assert "not tracked" not in r.text
    # m0119: blacklist received Sat 2026-09-26 16:13; Mon, Tue, Wed count: due Thu 00:00
    row = r.text.split("<code>m0119</code>")[1].split("</tr>")[0]
    assert "2026-10-01 00:00:00 +03:00" in row and "<td>met</td>" in row
    pending = r.text.split('id="pending"')[1].split("</table>")[0]
    assert "p-old" in pending and "p-new" in pending and NUMBER not in pending
    assert "overdue by" in pending.split("p-old")[1] and "business hours left" in pending.split("p-new")[1]
    older = re.search(r'href="/optouts(\?[^"]+)" rel="next"', r.text)
    assert older
    page2 = open_client.get("/optouts" + older.group(1).replace("&amp;", "&"))
    assert ledger_ids(page2.text) == [f"m{i:04d}" for i in range(69, 19, -1)]
    last = open_client.get("/optouts" + re.search(r'href="/optouts(\?[^"]+)" rel="next"',
                                                 page2.text).group(1).replace("&amp;", "&"))
    assert ledger_ids(last.text) == [f"m{i:04d}" for i in range(19, -1, -1)]
    assert 'rel="next"' not in last.text and 'id="pending"' not in last.text
    late = last.text.split("<code>m0001</code>")[1].split("</tr>")[0]
    assert "<strong>late</strong>" in late
    opt_in = last.text.split("<code>m0000</code>")[1].split("</tr>")[0]
    assert "met" not in opt_in and "late" not in opt_in  # an opt-in has no deadline


def test_optouts_filters(open_client: TestClient) -> None:
    # T0 is 2026-09-21 17:13 Turkey time; entries are an hour apart
    r = open_client.get("/optouts", params={"from": "2026-09-22", "to": "2026-09-22"})
    ids = ledger_ids(r.text)
    assert ids == [f"m{i:04d}" for i in range(30, 6, -1)]  # 00:13 .. 23:13 on the 22nd
    r = open_client.get("/optouts", params={"effect": "unblacklist"})
    assert ledger_ids(r.text) == [f"m{i:04d}" for i in range(110, -1, -10)]
    assert "p-old" not in r.text and "p-new" not in r.text
    r = open_client.get("/optouts", params={"effect": "iys_ret"})
    assert ledger_ids(r.text) == [] and "p-new" in r.text and "p-old" not in r.text
    day = {"from": "2026-09-22", "to": "2026-09-22"}
    r = open_client.get("/optouts", params={"effect": "unblacklist", **day})
    assert ledger_ids(r.text) == ["m0030", "m0020", "m0010"]
    r = open_client.get("/optouts", params={"from": "yesterday", "effect": "<b>"})
    assert r.status_code == 200 and "from: not a date" in r.text
    assert "effect: one of blacklist, unblacklist, iys_ret, iys_onay" in r.text
    assert "<b>" not in r.text.split("<main>")[1]
    r = open_client.get("/optouts", params={"before": "garbage!"})
    assert len(ledger_ids(r.text)) == 50


def test_optouts_csv_masked_without_token_full_with_it(open_client: TestClient,
                                                       token_client: TestClient) -> None:
    r = open_client.get("/optouts.csv", params={"effect": "blacklist"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 109 and {row["action"] for row in rows} == {"blacklist"}
    assert rows[0]["status"] == "pending" and rows[0]["message_id"] == "p-old"
    assert rows[0]["within_deadline"] == "pending"
    assert rows[1]["message_id"] == "m0119" and rows[1]["number"] == MASKED and NUMBER not in r.text
    assert rows[1]["received_at"].endswith("+03:00")
    assert (rows[1]["deadline"], rows[1]["within_deadline"]) == ("2026-10-01T00:00:00+03:00", "yes")
    assert rows[-1]["message_id"] == "m0001" and rows[-1]["within_deadline"] == "no"
    assert token_client.get("/optouts.csv").status_code == 401
    r = token_client.get("/optouts.csv", headers=BEARER, params={"from": "2026-09-22", "to": "2026-09-22"})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 24
    full = token_client.get("/optouts.csv", headers=BEARER).text
    assert NUMBER in full and len(list(csv.DictReader(io.StringIO(full)))) == 122
    assert open_client.get("/optouts.csv", params={"from": "nope"}).status_code == 400


def test_dead_letters_list_pages_and_raw_row(open_client: TestClient) -> None:
    r = open_client.get("/dead-letters")
    assert r.status_code == 200 and '<strong id="held">60</strong>' in r.text
    ids = re.findall(r'<tr data-id="(d\d{3})">', r.text)
    assert ids == [f"d{i:03d}" for i in range(59, 9, -1)]
    assert "page 1 of 2" in r.text and NUMBER not in r.text and MASKED in r.text
    assert 'class="retry"' not in r.text  # read-only without a token
    r2 = open_client.get("/dead-letters", params={"page": 2})
    assert re.findall(r'<tr data-id="(d\d{3})">', r2.text) == [f"d{i:03d}" for i in range(9, -1, -1)]
    raw = open_client.get("/dead-letters/d005")
    assert raw.status_code == 200 and '"id": "d005"' in html.unescape(raw.text)
    assert NUMBER not in raw.text and MASKED in raw.text
    assert "2026-09-21 17:13:25 +03:00" in raw.text
    assert open_client.get("/dead-letters/nope").status_code == 404


def test_dead_letters_filtered_by_rule(open_client: TestClient, seeded: MemoryStore) -> None:
    for i in range(3):
        asyncio.run(seeded.dead_letter(f"o{i}", "w", "blacklist failed", rule="optout",
                                       row={"id": f"o{i}"}, now=T0 - i))
    r = open_client.get("/dead-letters", params={"rule": "optout"})
    assert re.findall(r'<tr data-id="(\w+)">', r.text) == ["o0", "o1", "o2"]
    assert '<option value="optout" selected>' in r.text and 'rel="next"' not in r.text
    r = open_client.get("/dead-letters", params={"rule": "survey"})
    assert len(re.findall(r'<tr data-id="(d\d{3})">', r.text)) == 50
    older = re.search(r'href="/dead-letters(\?[^"]+)" rel="next"', r.text).group(1).replace("&amp;", "&")
    assert "rule=survey" in older and "page=2" in older
    assert len(re.findall(r'<tr data-id="(d\d{3})">', open_client.get("/dead-letters" + older).text)) == 10
    assert "No dead letters" in open_client.get("/dead-letters", params={"rule": "<nope>"}).text


def test_stored_xss_is_shown_as_text(open_client: TestClient) -> None:
    for path in ("/dead-letters", "/dead-letters/d059"):
        page = open_client.get(path).text
        assert XSS not in page and "<script" not in page
        assert "&lt;script&gt;" in page
    page = open_client.get("/surveys").text  # a vote's choice is a label in the SVG chart
    assert IMG_XSS not in page and "<img" not in page and "&lt;img src=x" in page


# -- safe by default ----------------------------------------------------------------------------

def test_security_headers_everywhere(open_client: TestClient) -> None:
    for path in ("/", "/surveys", "/optouts", "/dead-letters", "/static/dashboard.css", "/nope",
                 "/surveys/spring-2026.csv"):
        r = open_client.get(path)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, path
        assert "unsafe-inline" not in csp and "script-src" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
    css = open_client.get("/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    page = open_client.get("/").text
    assert "<script" not in page and "style=" not in page and "http" not in page.split("<body>")[1]


def test_read_only_without_token(open_client: TestClient, seeded: MemoryStore) -> None:
    r = open_client.post("/dead-letters/d001/retry", follow_redirects=False)
    assert r.status_code == 403
    assert asyncio.run(seeded.get_dead_letter("d001")) is not None
    assert open_client.get("/login", follow_redirects=False).status_code == 303


def test_with_token_every_request_needs_it(token_client: TestClient) -> None:
    for path in ("/", "/surveys", "/optouts", "/dead-letters", "/dead-letters/d001", "/surveys/nps.csv"):
        r = token_client.get(path, headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
        assert token_client.get(path).status_code == 401
        assert token_client.get(path, headers={"authorization": "Bearer wrong"}).status_code == 401
        assert token_client.get(path, headers=BEARER).status_code == 200
    assert token_client.post("/dead-letters/d001/retry").status_code == 401


def test_login_sets_a_strict_httponly_cookie(token_client: TestClient) -> None:
    page = token_client.get("/login")
    assert page.status_code == 200 and "Welcome" in page.text and "Hoş geldiniz" in page.text
    bad = token_client.post("/login", data={"token": "nope"})
    assert bad.status_code == 401 and "Wrong token" in bad.text
    r = token_client.post("/login", data={"token": TOKEN, "name": "Ayşe", "next": "/surveys"},
                          follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/surveys"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie
    home = token_client.get("/", headers=HTML)
    assert home.status_code == 200 and "Ayşe" in home.text
    # a tampered cookie is refused
    value = token_client.cookies.get("keyrouter_session")
    token_client.cookies.set("keyrouter_session", value[:-1] + ("0" if value[-1] != "0" else "1"))
    assert token_client.get("/").status_code == 401


def test_login_never_redirects_off_site_and_brakes_guessing(token_client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        r = token_client.post("/login", data={"token": TOKEN, "next": target}, follow_redirects=False)
        assert r.headers["location"] == "/"
    token_client.cookies.clear()
    for _ in range(5):
        assert token_client.post("/login", data={"token": "guess"}).status_code == 401
    assert token_client.post("/login", data={"token": TOKEN}).status_code == 429


def test_session_expires(make_app: Callable[..., Any]) -> None:
    app = make_app(token=TOKEN)
    now = [T0]
    app.state.dashboard.auth._clock = lambda: now[0]
    with TestClient(app) as client:
        sign_in(client)
        assert client.get("/").status_code == 200
        now[0] += 13 * 3600
        assert client.get("/").status_code == 401


def test_retry_and_drop_need_the_csrf_token_and_are_logged(
        token_client: TestClient, seeded: MemoryStore, caplog: pytest.LogCaptureFixture) -> None:
    sign_in(token_client)
    page = token_client.get("/dead-letters")
    assert "Retry" in page.text and "Drop" in page.text
    csrf = csrf_of(page.text)
    for form in ({}, {"csrf": "0" * 64}):
        r = token_client.post("/dead-letters/d058/retry", data=form, follow_redirects=False)
        assert r.status_code == 403
    assert asyncio.run(seeded.get_dead_letter("d058")) is not None
    with caplog.at_level(logging.INFO, logger="keyrouter.dashboard"):
        r = token_client.post("/dead-letters/d058/retry", data={"csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303
        r = token_client.post("/dead-letters/d057/drop", data={"csrf": csrf})
        assert r.status_code == 200 and "Drop for good" in r.text  # asks once: nothing dropped yet
        assert asyncio.run(seeded.get_dead_letter("d057")) is not None
        assert csrf_of(r.text) == csrf
        r = token_client.post("/dead-letters/d057/drop", data={"csrf": csrf, "confirm": "yes"})
    assert r.status_code == 200 and "dropped d057" in r.text
    assert asyncio.run(seeded.get_dead_letter("d058")) is None
    assert asyncio.run(seeded.unfinished(["d058", "d057"])) == ["d058"]
    ids = re.findall(r'<tr data-id="(d\d{3})">', r.text)
    assert "d058" not in ids and "d057" not in ids and '<strong id="held">58</strong>' in r.text
    logged = [rec.getMessage() for rec in caplog.records]
    assert any("d058 retried by Ayşe" in m for m in logged)
    assert any("d057 dropped by Ayşe" in m for m in logged)
    assert "Recent actions" in r.text and "Ayşe" in r.text
    # scripts: the bearer header, no CSRF (no cookie involved)
    token_client.cookies.clear()
    r = token_client.post("/dead-letters/d056/drop", headers=BEARER, data={"confirm": "yes"},
                          follow_redirects=False)
    assert r.status_code == 303
    assert token_client.post("/dead-letters/d056/explode", headers=BEARER).status_code == 404


def test_logout_needs_csrf_and_ends_the_session(token_client: TestClient) -> None:
    sign_in(token_client)
    csrf = csrf_of(token_client.get("/").text)
    assert token_client.post("/logout", data={}).status_code == 403
    r = token_client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and 'keyrouter_session=""' in r.headers["set-cookie"]


def test_host_header_is_checked_on_loopback(make_app: Callable[..., Any]) -> None:
    with TestClient(make_app(allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://127.0.0.1") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"host": "attacker.example"}).status_code == 400


def test_store_failure_is_a_503_with_headers(make_app: Callable[..., Any]) -> None:
    class Broken(MemoryStore):
        async def counts(self) -> dict[str, int]:
            raise ConnectionError("down")

    with TestClient(make_app(store=Broken("broken")), raise_server_exceptions=False) as c:
        r = c.get("/")
        assert r.status_code == 503 and "did not answer" in r.text
        assert r.headers["x-content-type-options"] == "nosniff"


def test_pages_over_a_real_redis(make_app: Callable[..., Any]) -> None:
    """The same pages over the real Redis (its own db and namespace, deleted afterwards): the
    store opens in the app's lifespan, on the server's event loop."""
    import uuid

    import redis

    from keyrouter.store import open_store
    from keyrouter.store.keys import Keys

    from .conftest import seed

    url = WEB_URL
    ns = f"web-{uuid.uuid4().hex}"

    async def fill() -> None:
        async with open_store(url, ns) as store:
            await seed(store, optouts=60, dead=55)

    asyncio.run(fill())
    try:
        with TestClient(make_app(token=TOKEN, opener=lambda: open_store(url, ns))) as client:
            assert '<strong id="held">55</strong>' in client.get("/dead-letters", headers=BEARER).text
            assert ledger_ids(client.get("/optouts", headers=BEARER).text)[:2] == ["m0059", "m0058"]
            assert "data-votes=\"3\"" in client.get("/surveys", headers=BEARER).text
            sign_in(client)
            csrf = csrf_of(client.get("/dead-letters").text)
            r = client.post("/dead-letters/d054/retry", data={"csrf": csrf})
            assert "retried d054" in r.text and '<strong id="held">54</strong>' in r.text
            assert 'data-id="d054"' not in r.text
    finally:
        sync = redis.Redis.from_url(url)
        for key in sync.scan_iter(match=Keys(ns).pattern, count=1000):
            sync.delete(key)
        sync.close()


def test_an_effect_filter_searches_a_bounded_stretch_and_goes_on(
        open_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from keyrouter.web import pages

    monkeypatch.setattr(pages, "LEDGER_SCAN", 25)
    seen: list[str] = []
    searched = 0
    path = "/optouts?effect=unblacklist"
    for _ in range(20):
        r = open_client.get(path)
        seen += ledger_ids(r.text)
        searched += 'id="searched"' in r.text
        older = re.search(r'href="/optouts(\?[^"]+)" rel="next"', r.text)
        if older is None:
            break
        path = "/optouts" + older.group(1).replace("&amp;", "&")
    assert seen == [f"m{i:04d}" for i in range(110, -1, -10)] and searched >= 3
    r = open_client.get("/optouts?effect=iys_onay")
    assert ledger_ids(r.text) == [] and "in the lines searched" in r.text and 'rel="next"' in r.text
