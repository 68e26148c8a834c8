"""The page in a real headless browser (Debian's chromium, driven by Playwright): a
session started over the API appears in the list, its trials appear live, and its view
opens. Skips, saying why, where no browser is installed."""

import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes import FakeOpenAIServer
from tests.test_service import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")


def test_the_page_shows_a_session_live(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    def slow(b, n):
        if "FinalAnswer" in [t["function"]["name"] for t in b["tools"]]:
            return ("sleep", 0.5, ("ok", "FinalAnswer", {"learning_rate": 1e-3, "momentum": 0.9,
                                                              "rationale": "trial 3 was best"}))
        return (
            "sleep",
            0.5,
            (
                "ok",
                "run_momentum_gd",
                {"learning_rate": [2e-4, 0.5, 6e-4, 1e-3, 1e-5, 1.2e-3, 3e-4, 0.02][n % 8], "momentum": 0.9},
            ),
        )
    srv = Server(tmp_path / "runs", env={"OPENAI_API_KEY": "sk-page-test-000000"})
    try:
        with FakeOpenAIServer([slow]) as llm, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(srv.url + "/")
            page.wait_for_selector("#sessions")
            sid = httpx.post(srv.url + "/api/sessions", json={
                "method": "llm", "function": "rosenbrock", "budget": 6, "model": "openai:m", "base_url": llm.url,
                "max_iter": 3000}).json()["id"]
            # the list is live: the new session appears without a reload
            page.wait_for_selector(f'tr[data-id="{sid}"]', timeout=20_000)
            page.click(f'tr[data-id="{sid}"]')
            page.wait_for_selector("#trials")
            seen = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                seen.append(page.locator("#trials tr").count() - 1)  # trial rows, live from the event stream
                if "finished" in (page.text_content("#status") or ""):
                    break
                time.sleep(0.3)
            assert seen[-1] >= 6 and len(set(seen)) > 2, seen  # rows arrived over time, not at once
            page.wait_for_selector("svg.best")
            assert "budget_spent" in page.text_content("#stop")
            shot = tmp_path / "service.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:4] == b"\x89PNG"
            if os.environ.get("TUNELOOP_SCREENSHOT"):  # the README's picture comes from this run
                shutil.copy(shot, Path(os.environ["TUNELOOP_SCREENSHOT"]))
            browser.close()
    finally:
        srv.stop()
