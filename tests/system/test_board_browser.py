"""The supervisor's screen in a real browser (Debian's chromium driven by Playwright) against a
real collector process fed through its ingest API, with a real webhook receiver for the pages."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifeline_lab.boardfeed import CHROMIUM, CHROMIUM_ARGS, PASSWORD, BoardScene

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make test installs it)"),
]
SOON = 10_000  # ms: a guard against a hung page, not a measurement (bench/board.py measures)


class Pager:
    """A webhook receiver on loopback: every notification the collector sends."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        pager = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with pager.lock:
                    pager.payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paged(self, agent: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                alert
                for payload in self.payloads
                for alert in payload["alerts"]
                if alert["labels"].get("agent") == agent and alert["status"] == "firing"
            ]

    def acked(self, agent: str) -> list[dict[str, Any]]:
        return [a for a in self.paged(agent) if "acknowledged_by" in a["annotations"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def wait_for(what: str, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def pager() -> Iterator[Pager]:
    receiver = Pager()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, pager: Pager) -> Iterator[BoardScene]:
    built = BoardScene(tmp_path_factory.mktemp("board"))
    built.write_config(pager.url)
    built.add_user("vic", "viewer")
    built.add_user("ana", "supervisor")
    for site, count in (("north", 6), ("west", 3)):
        for n in range(1, count + 1):
            built.add_position(f"{site}-{n:02d}", site, str(n))
    built.start()
    try:
        for agent in built.positions:
            built.report(agent)
        yield built
    finally:
        built.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    opened = context.new_page()
    yield opened
    context.close()


def log_in(page: Any, scene: BoardScene, name: str) -> None:
    page.goto(f"{scene.url}/")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#board", timeout=SOON)


def fail(scene: BoardScene, agent: str) -> None:
    """The position's home internet goes down (its own cause: several positions losing the VPN at
    once would be one fleet incident, paged once for the site)."""
    scene.report(
        agent,
        layers={"internet": "failed"},
        verdict=("internet", "home internet (ISP) down"),
        ready=0.0,
        priority=True,
    )


def test_logged_out_sees_nothing_but_the_login_page(page: Any, scene: BoardScene) -> None:
    for path in ("/", "/positions/north-01", "/admin/audit"):
        page.goto(scene.url + path)
        assert page.url.startswith(f"{scene.url}/login")
        text = page.inner_text("body")
        assert "Log in to Lifeline" in text
        assert "north" not in text
        assert "Position" not in text


def test_board_shows_positions_and_a_change_arrives_without_a_reload(page: Any, scene: BoardScene) -> None:
    log_in(page, scene, "vic")
    assert page.locator("tbody tr").count() == len(scene.positions)
    assert page.inner_text("#row-north-03 td:first-child").strip() == "OK"
    assert "Live" in page.inner_text("#live")
    page.evaluate("window.sameDocument = true")
    fail(scene, "north-03")
    page.wait_for_selector('#row-north-03[data-state="down"]', timeout=SOON)
    row = page.inner_text("#row-north-03")
    assert "Down" in row
    assert "home internet (ISP) down" in row
    assert "not acknowledged" in row
    assert page.evaluate("window.sameDocument") is True  # updated in place, not reloaded
    # Worst first: the position that went down now leads its site.
    assert page.locator("section.site").first.get_attribute("data-site") == "north"
    assert page.locator("section.site tbody tr").first.get_attribute("id") == "row-north-03"
    assert page.inner_text('[data-count="down"] b') == "1"


def test_a_viewer_cannot_acknowledge(page: Any, scene: BoardScene) -> None:
    fail(scene, "north-04")
    log_in(page, scene, "vic")
    page.goto(f"{scene.url}/positions/north-04")
    assert "home internet (ISP) down" in page.inner_text("main")
    assert page.locator("button:has-text('Acknowledge')").count() == 0
    # Even a hand-made request with the viewer's own CSRF token is refused.
    status = page.evaluate(
        """async () => {
            const csrf = document.querySelector('input[name=csrf]').value;
            const body = new URLSearchParams({csrf: csrf, fingerprint: 'x'});
            const answer = await fetch('/positions/north-04/ack', {method: 'POST', body: body});
            return answer.status;
        }"""
    )
    assert status == 403


def test_a_supervisor_acknowledges_from_the_browser(
    browser: Any, page: Any, scene: BoardScene, pager: Pager
) -> None:
    fail(scene, "north-05")
    wait_for("the page for north-05", lambda: pager.paged("north-05"))
    watcher = browser.new_context().new_page()  # another supervisor's open board
    log_in(watcher, scene, "vic")
    log_in(page, scene, "ana")
    page.click("#row-north-05 a")
    page.fill("input[name=note]", "calling her mobile")
    page.click("button:has-text('Acknowledge')")
    page.wait_for_selector("text=Acknowledged by ana", timeout=SOON)
    alerts = httpx.get(
        f"{scene.url}/api/v1/alerts", headers={"Authorization": f"Bearer {scene.admin_token}"}
    ).json()
    (alert,) = [a for a in alerts if a["labels"]["agent"] == "north-05"]
    assert alert["status"]["acknowledged"]["by"] == "ana"
    assert alert["status"]["acknowledged"]["comment"] == "calling her mobile"
    # Whoever was paged hears that ana is on it.
    wait_for("the acknowledgement at the pager", lambda: pager.acked("north-05"))
    (told,) = pager.acked("north-05")
    assert told["annotations"]["acknowledged_by"] == "ana"
    assert told["annotations"]["ack_comment"] == "calling her mobile"
    watcher.wait_for_selector("#row-north-05 >> text=acknowledged by ana", timeout=SOON)
    watcher.context.close()
    audit = scene.cli("audit", "--action", "ack", "--format", "json")
    assert any(r["actor"] == "ana" and r["target"] == "agent=north-05" for r in json.loads(audit))


def test_a_maintenance_window_mutes_the_page_not_the_board(
    page: Any, scene: BoardScene, pager: Pager
) -> None:
    log_in(page, scene, "ana")
    page.goto(f"{scene.url}/positions/west-01")
    now = datetime.now()  # noqa: DTZ005 - the browser's wall clock (same machine, same time zone)
    form = page.locator("#maintenance-form")
    form.locator("select[name=scope]").select_option("site")
    form.locator("input[name=starts]").fill(now.strftime("%Y-%m-%dT%H:%M"))
    later = datetime.fromtimestamp(now.timestamp() + 7200)  # noqa: DTZ006 - wall clock, as above
    form.locator("input[name=ends]").fill(later.strftime("%Y-%m-%dT%H:%M"))
    form.locator("input[name=reason]").fill("ISP work in the west")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("text=Maintenance for site=west scheduled", timeout=SOON)
    fail(scene, "west-01")
    fail(scene, "north-06")  # the control: outside the window, it pages
    wait_for("the page for north-06", lambda: pager.paged("north-06"))
    assert pager.paged("west-01") == []
    page.goto(f"{scene.url}/")
    row = page.inner_text("#row-west-01")
    assert "Down" in row
    assert "maintenance: ISP work in the west" in row


def test_the_board_says_when_its_connection_is_lost(browser: Any, tmp_path: Path) -> None:
    own = BoardScene(tmp_path / "lost")
    own.write_config()
    own.add_user("vic", "viewer")
    own.add_position("pos-1", "north", "1")
    own.start()
    try:
        own.report("pos-1")
        context = browser.new_context()
        tab = context.new_page()
        log_in(tab, own, "vic")
        tab.wait_for_selector("#live.ok", timeout=SOON)
        own.stop()
        tab.wait_for_selector("#live.lost", timeout=30_000)
        assert "Live updates lost" in tab.inner_text("#live")
        context.close()
    finally:
        own.stop()
