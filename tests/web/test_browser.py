"""The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium) against `keyrouter dashboard` running as its own process under uvicorn on a free port,
over a SQLite store the test seeds and reads.

Screenshots of every page go to the test's temporary folder (printed with -s); nothing here
touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import copy
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis_server import free_port
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from keyrouter.store.sqlite import SqliteStore

from .conftest import TOKEN, seed, write_rules

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MISSING = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
if MISSING and os.environ.get("KEYROUTER_TEST_BROWSER") != "required":  # .ci/run requires them
    pytest.skip(f"no {' or '.join(MISSING)}: apt-get install chromium chromium-driver",
                allow_module_level=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-browser")


@pytest.fixture(scope="module")
def database(folder: Path) -> Path:
    path = folder / "store.sqlite3"

    async def fill() -> None:
        store = SqliteStore(path, "browser")
        await seed(store)
        await store.close()

    asyncio.run(fill())
    return path


@pytest.fixture(scope="module")
def server(folder: Path, database: Path) -> Iterator[str]:
    """`keyrouter dashboard` with a token, as an operator starts it."""
    port = free_port()
    rules = write_rules(folder)
    env = {**os.environ, "KEYROUTER_DASHBOARD_TOKEN": TOKEN, "KEYROUTER_NAMESPACE": "browser"}
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyrouter.cli", "dashboard", "--host", "127.0.0.1", "--port", str(port),
         "--store", f"sqlite:///{database}", "--rules", str(rules)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/login", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not start: {(folder / 'server.log').read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _start_chromium(options: webdriver.ChromeOptions, folder: Path) -> WebDriver:
    """Chromium's start-up can time out on a loaded machine ("DevToolsActivePort file doesn't
    exist"): that is the tool failing to start, not the dashboard, so a second try with a fresh
    profile is fair; a second failure fails the test."""
    for attempt in (1, 2):
        attempt_options = copy.deepcopy(options)
        attempt_options.add_argument(f"--user-data-dir={folder / f'chromium-profile-{attempt}'}")
        try:
            return webdriver.Chrome(options=attempt_options, service=Service(executable_path=CHROMEDRIVER))
        except WebDriverException:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def browser(folder: Path) -> Iterator[WebDriver]:
    assert shutil.which(CHROMIUM) or os.path.exists(CHROMIUM), "Debian's chromium is not installed"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--no-first-run",
                "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = _start_chromium(options, folder)
    driver.set_page_load_timeout(60)
    driver.implicitly_wait(10)  # find_element waits for the element a new page brings
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screens(folder: Path) -> Path:
    path = folder / "screens"
    path.mkdir(exist_ok=True)
    print(f"\nscreenshots: {path}")
    return path


def shoot(driver: WebDriver, screens: Path, name: str) -> Path:
    """A full-page screenshot: the window grows to the page's height first."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 20, 600), 4000))
    path = screens / f"{name}.png"
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 1000
    driver.set_window_size(1280, 1000)
    return path


def click_through(driver: WebDriver, element: WebElement) -> None:
    """Click what submits a form or follows a link, and wait until the next page replaced this
    one (click() returns before the navigation ends)."""
    element.click()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(element))


def absent(driver: WebDriver, css: str) -> bool:
    """No such element on the page as it is now (no implicit wait for one to appear)."""
    driver.implicitly_wait(0)
    try:
        return not driver.find_elements(By.CSS_SELECTOR, css)
    finally:
        driver.implicitly_wait(10)


def no_script_ran(driver: WebDriver) -> None:
    assert driver.title != "pwned" and "pwned" not in driver.title
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - raises when there is none


@pytest.fixture(scope="module")
def signed_in(browser: WebDriver, server: str, screens: Path) -> WebDriver:
    browser.get(server + "/")
    assert "/login" in browser.current_url
    assert "Hoş geldiniz" in browser.find_element(By.TAG_NAME, "h1").text
    shoot(browser, screens, "login")
    browser.find_element(By.ID, "name").send_keys("Ayşe")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    click_through(browser, browser.find_element(By.ID, "signin"))
    assert browser.current_url == server + "/"
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Status")
    # the session cookie is HttpOnly: no page script could read it
    assert "keyrouter_session" not in browser.execute_script("return document.cookie")
    assert browser.get_cookie("keyrouter_session")["sameSite"] == "Strict"
    return browser


def test_status_page(signed_in: WebDriver, server: str, screens: Path) -> None:
    signed_in.get(server + "/")
    assert signed_in.find_element(By.ID, "held").text == "60"
    assert len(signed_in.find_element(By.ID, "version").text) == 12
    shoot(signed_in, screens, "status")


def test_survey_chart_bars_match_the_votes(signed_in: WebDriver, server: str, screens: Path,
                                           database: Path) -> None:
    async def results() -> dict[str, int]:
        store = SqliteStore(database, "browser")
        try:
            return (await store.survey_results("spring-2026")).votes
        finally:
            await store.close()

    votes = asyncio.run(results())
    signed_in.get(server + "/surveys")
    section = signed_in.find_element(By.CSS_SELECTOR, 'section[data-survey="spring-2026"]')
    bars = section.find_elements(By.CSS_SELECTOR, "rect.bar")
    shown = {b.get_attribute("data-choice"): int(b.get_attribute("data-votes")) for b in bars}
    assert shown == {"a": votes["a"], "b": votes["b"], "c": 0} == {"a": 3, "b": 1, "c": 0}
    widths = {b.get_attribute("data-choice"): b.rect["width"] for b in bars}
    assert widths["c"] == 0 and widths["b"] > 0
    assert abs(widths["a"] - 3 * widths["b"]) < 1.5  # drawn to scale, as the browser lays it out
    counts = [t.text for t in section.find_elements(By.CSS_SELECTOR, "text.count")]
    assert counts == ["3 (75.0%)", "1 (25.0%)", "0 (0.0%)"]
    assert section.find_element(By.CSS_SELECTOR, "td.voters").text == "4"
    no_script_ran(signed_in)  # the nps survey holds a vote whose choice is an <img onerror>
    shoot(signed_in, screens, "surveys")


def test_optouts_page(signed_in: WebDriver, server: str, screens: Path) -> None:
    signed_in.get(server + "/optouts")
    assert len(signed_in.find_elements(By.CSS_SELECTOR, "#ledger tbody tr")) == 50
    assert len(signed_in.find_elements(By.CSS_SELECTOR, "#pending tr.pending")) == 2
    assert "+905321234567" not in signed_in.page_source
    shoot(signed_in, screens, "optouts")
    click_through(signed_in, signed_in.find_element(By.ID, "older"))
    assert "before=" in signed_in.current_url
    assert len(signed_in.find_elements(By.CSS_SELECTOR, "#ledger tbody tr")) == 50


def test_stored_xss_does_not_execute(signed_in: WebDriver, server: str, screens: Path) -> None:
    signed_in.get(server + "/dead-letters/d059")
    raw = signed_in.find_element(By.ID, "raw").text
    assert "<script>document.title='pwned'</script>" in raw
    no_script_ran(signed_in)
    shoot(signed_in, screens, "dead-letter-raw")
    signed_in.get(server + "/dead-letters")
    assert "<script>" in signed_in.find_element(By.CSS_SELECTOR, 'tr[data-id="d059"] .error-text').text
    no_script_ran(signed_in)


def test_retry_a_dead_letter_and_see_it_leave(signed_in: WebDriver, server: str, screens: Path,
                                               database: Path) -> None:
    signed_in.get(server + "/dead-letters")
    held = int(signed_in.find_element(By.ID, "held").text)
    shoot(signed_in, screens, "dead-letters")
    click_through(signed_in, signed_in.find_element(By.CSS_SELECTOR, 'tr[data-id="d058"] button.retry'))
    assert "retried d058" in signed_in.find_element(By.CSS_SELECTOR, "p.notice").text
    assert absent(signed_in, 'tr[data-id="d058"]')
    assert int(signed_in.find_element(By.ID, "held").text) == held - 1
    assert "Ayşe" in signed_in.find_element(By.TAG_NAME, "main").text  # the action log

    async def still_dead() -> bool:
        store = SqliteStore(database, "browser")
        try:
            return await store.get_dead_letter("d058") is not None
        finally:
            await store.close()

    assert not asyncio.run(still_dead())


def test_drop_asks_once_then_the_letter_is_gone(signed_in: WebDriver, server: str, screens: Path) -> None:
    signed_in.get(server + "/dead-letters")
    click_through(signed_in, signed_in.find_element(By.CSS_SELECTOR, 'tr[data-id="d057"] button.drop'))
    assert signed_in.find_element(By.TAG_NAME, "h1").text.startswith("Drop dead letter")
    shoot(signed_in, screens, "confirm-drop")
    click_through(signed_in, signed_in.find_element(By.ID, "confirm-drop"))
    assert "dropped d057" in signed_in.find_element(By.CSS_SELECTOR, "p.notice").text
    assert absent(signed_in, 'tr[data-id="d057"]')


def test_long_rule_names_and_the_optout_table_fit_1200_px(signed_in: WebDriver, server: str,
                                                          database: Path) -> None:
    """The status chart shows a long rule name whole, and the opt-out page does not scroll
    sideways in a 1,200 px window (the width the dashboard is laid out for)."""
    long_name = "kampanya-anketi-2026-bahar-donemi-cevaplari"

    async def routed() -> None:
        store = SqliteStore(database, "browser")
        try:
            await store.count_routed({(long_name, int(time.time() // 3600)): 7})
        finally:
            await store.close()

    asyncio.run(routed())
    signed_in.set_window_size(1200, 1000)
    try:
        signed_in.get(server + "/")
        label = signed_in.find_element(By.CSS_SELECTOR, "#routed svg text.label")
        assert label.text == long_name
        left = signed_in.execute_script("return arguments[0].getBBox().x", label)
        assert left >= 0  # drawn inside the chart, not cut off at its left edge
        signed_in.get(server + "/optouts")
        wide = signed_in.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert wide[0] <= wide[1], wide
    finally:
        signed_in.set_window_size(1280, 1000)
