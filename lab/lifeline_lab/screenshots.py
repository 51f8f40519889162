"""``python -m lifeline_lab.screenshots [DIR]`` (``make screenshots``): the board and a position page,
rendered by Debian's chromium from a real collector fed a small center (``boardfeed.demo``).

The pictures in the docs are made this way, so they are always the real pages.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from lifeline_lab.boardfeed import CHROMIUM, CHROMIUM_ARGS, PASSWORD, BoardScene, demo, feed_demo


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs/img")
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="lifeline-shots-") as workdir:
        scene = BoardScene(Path(workdir))
        scene.write_config()
        scene.add_user("ana", "supervisor")
        demo(scene)
        scene.start()
        try:
            feed_demo(scene, history_minutes=90)
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{scene.url}/")
                page.fill("#name", "ana")
                page.fill("#password", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_selector("#live.ok")
                page.screenshot(path=str(out / "board.png"), full_page=True)
                page.goto(f"{scene.url}/positions/north-02")
                page.wait_for_selector(".graph svg")
                page.screenshot(path=str(out / "position.png"), full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})  # a phone
                page.goto(f"{scene.url}/?site=north")
                page.wait_for_selector("#live.ok")
                page.screenshot(path=str(out / "board-phone.png"))
                browser.close()
        finally:
            scene.stop()
    for name in ("board.png", "position.png", "board-phone.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
