"""The dashboard in a real headless browser: Debian's chromium and chromedriver, driven by Selenium.

One dashboard (``vermilion dashboard``, a subprocess), one busy queue (a real
producer and worker, a subprocess) and one browser serve the whole module.
Without /usr/bin/chromium the module is skipped, unless
``VERMILION_REQUIRE_BROWSER=1`` (CI sets it, and installs the browser).
``VERMILION_DASHBOARD_SCREENSHOT=PATH`` saves the screenshot there
(``nox -s screenshot`` writes docs/img/dashboard.png).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vermilion import AsyncWorker, Failure, Message, MessageStatus, Queue

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "browser-test-token-0123456789abcdef"
ROOT = Path(__file__).parents[2]
XSS = "<script>window.__vermilionPwned = 1</script><img src=x onerror='window.__vermilionPwned = 2'>"

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    if os.environ.get("VERMILION_REQUIRE_BROWSER") == "1":
        raise RuntimeError(
            "VERMILION_REQUIRE_BROWSER=1 but /usr/bin/chromium or /usr/bin/chromedriver is missing"
        )
    pytest.skip("no /usr/bin/chromium and /usr/bin/chromedriver", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (only once the browser is known to be there)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], T | None], timeout: float = 15.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def _make_failures(url: str, name: str, contents: dict[str, tuple[object, str]]) -> None:
    """Have a worker fail each message: mid -> (content, reason)."""
    reasons = {mid: reason for mid, (_, reason) in contents.items()}

    async def fail(message: Message) -> Failure:
        return Failure(reasons[message.mid])

    async with Queue(name, url) as queue:
        for mid, (content, _) in contents.items():
            await queue.enqueue(content, mid=mid)
        async with AsyncWorker(queue, fail, presence_interval=None):
            deadline = time.monotonic() + 15
            while (await queue.status()).nfailed < len(contents):
                assert time.monotonic() < deadline, "the failures were not recorded"
                await asyncio.sleep(0.05)


async def _cleared(url: str, name: str) -> None:
    async with Queue(name, url) as queue:
        await queue.clear()


def in_redis(url: str, name: str, call: Callable[[Queue], Any]) -> Any:
    """Run ``call(queue)`` (a coroutine) on a fresh client: the check goes to Redis itself."""

    async def run() -> Any:
        async with Queue(name, url) as queue:
            return await call(queue)

    return asyncio.run(run())


@pytest.fixture(scope="module")
def busy(redis_url: str) -> Iterator[tuple[str, int]]:
    """A queue with a real producer and worker: its name and the worker's pid."""
    name = f"orders-{uuid.uuid4().hex[:6]}"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.dashboard.busy_queue", redis_url, name],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    yield name, process.pid
    stop(process)
    process.stdout.close()
    asyncio.run(_cleared(redis_url, name))


@pytest.fixture(scope="module")
def failing(redis_url: str) -> Iterator[str]:
    """A queue with failed messages and no worker: replay and purge show in Redis as they are."""
    name = f"payments-{uuid.uuid4().hex[:6]}"
    contents: dict[str, tuple[object, str]] = {
        "replay-me": ({"order": 1}, "timeout talking to the bank"),
        "refused-me": ({"order": 2}, "timeout talking to the bank"),
        "purge-me": ({"order": 3}, "bad address"),
        "xss": ({"note": XSS}, XSS),
    }
    asyncio.run(_make_failures(redis_url, name, contents))
    yield name
    asyncio.run(_cleared(redis_url, name))


@pytest.fixture(scope="module")
def dashboard_url(redis_url: str, busy: tuple[str, int], failing: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "VERMILION_DASHBOARD_TOKEN": TOKEN}
    command = [sys.executable, "-m", "vermilion", "dashboard", "--url", redis_url, "--port", str(port)]
    process = subprocess.Popen([*command, "--actions", "--interval", "0.5"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: answers(url + "api/overview"), what="the dashboard to answer")
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1500")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_queue(browser: webdriver.Chrome, dashboard_url: str, name: str) -> None:
    browser.get(f"{dashboard_url}#queue={name}")
    wait_until(lambda: browser.find_element(By.ID, "detail").is_displayed(), what="the queue's detail")


def browser_log(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console entries since the last call (reading the log empties it)."""
    entries: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def enter_token(browser: webdriver.Chrome) -> None:
    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(TOKEN)


def severe_logs(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    return [entry for entry in browser_log(browser) if entry["level"] == "SEVERE"]


def failed_row(browser: webdriver.Chrome, mid: str) -> WebElement | None:
    rows = browser.find_elements(By.CSS_SELECTOR, f'#failed tr[data-mid="{mid}"]')
    return rows[0] if rows else None


def chart_state(browser: webdriver.Chrome, chart: str) -> tuple[int, list[float | None]]:
    node = browser.find_element(By.ID, chart)
    points = int(node.get_attribute("data-points") or 0)
    latest = browser.execute_script("return JSON.parse(arguments[0].dataset.latest || '[]')", node)
    return points, latest


def canvas_image(browser: webdriver.Chrome, chart: str) -> str:
    image: str = browser.execute_script(f"return document.querySelector('#{chart} canvas').toDataURL()")
    return image


def test_the_page_loads_without_console_errors(
    browser: webdriver.Chrome, dashboard_url: str, busy: tuple[str, int]
) -> None:
    open_queue(browser, dashboard_url, busy[0])
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, f'#queues tr[data-queue="{busy[0]}"]'))
    wait_until(lambda: chart_state(browser, "chart-rates")[0] >= 2, what="the first points")
    assert browser.find_element(By.ID, "error").is_displayed() is False
    assert severe_logs(browser) == []


def test_the_plots_draw_then_update_while_the_worker_runs(
    browser: webdriver.Chrome, dashboard_url: str, busy: tuple[str, int]
) -> None:
    open_queue(browser, dashboard_url, busy[0])

    def handling() -> tuple[int, list[float | None]] | None:
        points, (enqueued, handled, _) = chart_state(browser, "chart-rates")
        return (points, [enqueued, handled]) if handled and enqueued else None

    points, _ = wait_until(handling, what="non-zero enqueue and handling rates")
    before = {chart: canvas_image(browser, chart) for chart in ("chart-rates", "chart-size", "chart-time")}
    wait_until(lambda: chart_state(browser, "chart-rates")[0] >= points + 3, what="more points")
    for chart, image in before.items():
        assert canvas_image(browser, chart) != image, f"{chart} was not redrawn"
    _, (p50, p99) = chart_state(browser, "chart-time")
    assert p50 is not None and p99 is not None and 0 < p50 <= p99
    assert severe_logs(browser) == []


def test_the_live_worker_is_listed(
    browser: webdriver.Chrome, dashboard_url: str, busy: tuple[str, int]
) -> None:
    name, pid = busy
    open_queue(browser, dashboard_url, name)
    row = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#workers tr[data-worker]"))[0]
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    assert cells[2] == str(pid)
    assert cells[4] == "8"  # concurrency


def test_a_payload_holding_script_is_shown_as_text(
    browser: webdriver.Chrome, dashboard_url: str, failing: str
) -> None:
    open_queue(browser, dashboard_url, failing)
    row = wait_until(lambda: failed_row(browser, "xss"), what="the failed message")
    assert XSS in row.find_element(By.CSS_SELECTOR, "pre.payload").text
    assert row.find_elements(By.TAG_NAME, "td")[3].text == XSS  # the reason
    assert browser.find_elements(By.CSS_SELECTOR, "#failed img, #failed script") == []
    assert browser.execute_script("return window.__vermilionPwned === undefined") is True
    assert severe_logs(browser) == []


def test_a_replay_without_the_token_is_refused(
    browser: webdriver.Chrome, dashboard_url: str, failing: str, redis_url: str
) -> None:
    open_queue(browser, dashboard_url, failing)
    browser.execute_script("window.sessionStorage.clear()")
    browser.refresh()
    row = wait_until(lambda: failed_row(browser, "refused-me"), what="the failed message")
    row.find_element(By.CSS_SELECTOR, "button.replay").click()
    result = browser.find_element(By.ID, "action-result")
    wait_until(lambda: "refused" in result.text, what="the refusal")
    assert "token" in result.text
    status = in_redis(redis_url, failing, lambda queue: queue.message_status("refused-me"))
    assert status == MessageStatus.FAILED
    browser_log(browser)  # the refused POST's 401 is logged by the browser, as it should be


def test_a_replay_from_the_page_puts_the_message_back(
    browser: webdriver.Chrome, dashboard_url: str, failing: str, redis_url: str
) -> None:
    open_queue(browser, dashboard_url, failing)
    enter_token(browser)
    row = wait_until(lambda: failed_row(browser, "replay-me"), what="the failed message")
    row.find_element(By.CSS_SELECTOR, "button.replay").click()
    wait_until(lambda: "replayed 1" in browser.find_element(By.ID, "action-result").text, what="the replay")
    status = in_redis(redis_url, failing, lambda queue: queue.message_status("replay-me"))
    assert status == MessageStatus.QUEUED
    wait_until(lambda: failed_row(browser, "replay-me") is None or None, what="the row to go")
    assert severe_logs(browser) == []


def test_a_purge_from_the_page_removes_the_failed_message(
    browser: webdriver.Chrome, dashboard_url: str, failing: str, redis_url: str
) -> None:
    open_queue(browser, dashboard_url, failing)
    enter_token(browser)
    row = wait_until(lambda: failed_row(browser, "purge-me"), what="the failed message")
    row.find_element(By.CSS_SELECTOR, "button.purge").click()
    WebDriverWait(browser, 5).until(lambda driver: driver.switch_to.alert).accept()
    wait_until(lambda: "purged 1" in browser.find_element(By.ID, "action-result").text, what="the purge")
    mids = in_redis(redis_url, failing, lambda queue: queue.failed())
    assert "purge-me" not in [entry.mid for entry in mids]
    assert "xss" in [entry.mid for entry in mids]
    assert severe_logs(browser) == []


def test_replay_all_from_the_page_empties_the_history(
    browser: webdriver.Chrome, dashboard_url: str, failing: str, redis_url: str
) -> None:
    open_queue(browser, dashboard_url, failing)
    enter_token(browser)
    wait_until(lambda: failed_row(browser, "xss"), what="the failed messages")
    left = len(in_redis(redis_url, failing, lambda queue: queue.failed()))
    assert left >= 1
    browser.find_element(By.ID, "replay-all").click()
    wait_until(lambda: f"replayed {left}" in browser.find_element(By.ID, "action-result").text, what="replay")
    assert in_redis(redis_url, failing, lambda queue: queue.failed()) == []
    status = in_redis(redis_url, failing, lambda queue: queue.message_status("xss"))
    assert status == MessageStatus.QUEUED
    wait_until(lambda: browser.find_element(By.ID, "no-failed").is_displayed(), what="the empty history")
    assert severe_logs(browser) == []


def test_a_screenshot_of_the_busy_queue(
    browser: webdriver.Chrome, dashboard_url: str, busy: tuple[str, int], tmp_path: Path
) -> None:
    open_queue(browser, dashboard_url, busy[0])
    seconds = float(os.environ.get("VERMILION_DASHBOARD_SCREENSHOT_AFTER", "0"))
    wait_until(lambda: chart_state(browser, "chart-rates")[0] >= max(5, seconds * 2), timeout=seconds + 15)
    wait_until(
        lambda: (
            failed_row(browser, "") is None and browser.find_elements(By.CSS_SELECTOR, "#failed tr[data-mid]")
        )
    )
    target = Path(os.environ.get("VERMILION_DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
    browser.find_element(By.TAG_NAME, "body").screenshot(str(target))
    assert target.read_bytes().startswith(b"\x89PNG")
