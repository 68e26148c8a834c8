"""The page in a real headless browser (Debian's chromium, driven by Playwright): a
session started over the API appears in the list, its trials appear live, and its view
opens, with the best trial and whose recommendation it is; views have addresses
(#session/ID, #compare/ID1,ID2) that load directly and follow back/forward; plots keep
their markers and labels inside the frame, and their ticks are plain numbers. Skips,
saying why, where no browser is installed."""

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

# session A's proposals: on the box's edges (lr 1e-4 and 0.1, momentum 0 and 0.99), two close together
A_PROPOSALS = [(2e-4, 0.9), (0.1, 0.99), (6e-4, 0.9), (1e-3, 0.9), (1e-4, 0.0), (1.2e-3, 0.9), (3e-4, 0.5)]
# session B's: three runs into Rastrigin's same local minimum, in 285, 50 and 35 iterations: best
# scores 0.6906, 0.6901, 0.69007 (the axis that once read "1e-6+6.906e-1")
B_PROPOSALS = [(0.004262252891344373, 0.9269192315680037), (0.0025533069853734187, 0.6169477550756965),
               (0.001972617277363125, 0.430753600105939)]


def scripted(proposals, final, sleep=0.0):
    def reply(body, n):
        if "FinalAnswer" in [t["function"]["name"] for t in body["tools"]]:
            item = ("ok", "FinalAnswer", {"learning_rate": final[0], "momentum": final[1],
                                          "rationale": "it converged fastest of the trials"})
        else:
            lr, mom = proposals[(n - 1) % len(proposals)]
            item = ("ok", "run_momentum_gd", {"learning_rate": lr, "momentum": mom})
        return ("sleep", sleep, item) if sleep else item
    return reply


def finished(srv, sid, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = httpx.get(f"{srv.url}/api/sessions/{sid}").json()
        if d["status"] not in ("queued", "running"):
            return d
        time.sleep(0.3)
    raise AssertionError(f"session {sid} did not finish")


# the boxes (left, top, right, bottom) of a plot's frame, markers, point labels and tick labels
BOXES = """svg => {
  const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  return {frame: box(svg.querySelector("rect.frame")), marks: [...svg.querySelectorAll(".mark")].map(box),
          labels: [...svg.querySelectorAll(".mlabel")].map(box),
          ticks: [...svg.querySelectorAll(".xtick, .ytick")].map(box)};
}"""


def inside(b, frame, tol=0.5):
    return b[0] >= frame[0] - tol and b[1] >= frame[1] - tol and b[2] <= frame[2] + tol and b[3] <= frame[3] + tol


def overlap(a, b, tol=0.5):
    return min(a[2], b[2]) - max(a[0], b[0]) > tol and min(a[3], b[3]) - max(a[1], b[1]) > tol


def check_plot_boxes(page, selector, n_points, every_label=True):
    """Markers and point labels inside the frame; labels clear of each other and of the ticks.
    (A crowded plot leaves out a label that has no free spot: every_label=False.)"""
    boxes = page.locator(selector).evaluate(BOXES)
    frame = boxes["frame"]
    assert len(boxes["marks"]) == n_points, boxes
    assert len(boxes["labels"]) == n_points if every_label else 1 <= len(boxes["labels"]) <= n_points, boxes
    for b in boxes["marks"] + boxes["labels"]:
        assert inside(b, frame), (b, frame)  # so nothing reaches the ticks or the axis titles
    for i, a in enumerate(boxes["labels"]):
        assert not any(overlap(a, b) for b in boxes["labels"][i + 1:]), boxes["labels"]
        assert not any(overlap(a, t) for t in boxes["ticks"]), (a, boxes["ticks"])


def check_ticks(page, selector):
    """The best-so-far axis: plain numbers, all different, rising, no offset notation."""
    labels = page.locator(f"{selector} text.ytick").all_text_contents()
    assert len(labels) >= 2, labels
    for t in labels:
        assert "+" not in t and "e" not in t, labels  # no "1e-6+6.906e-1", no "1e+2"
    values = [float(t) for t in labels]
    assert values == sorted(values) and len(set(labels)) == len(labels), labels
    assert len({len(t.split(".")[-1]) if "." in t else 0 for t in labels}) == 1, labels  # same decimals
    return labels


@pytest.mark.slow
def test_the_page_shows_sessions_live_with_best_recommendation_and_addresses(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    srv = Server(tmp_path / "runs", env={"OPENAI_API_KEY": "sk-page-test-000000"})
    try:
        with FakeOpenAIServer([scripted(A_PROPOSALS, (1e-3, 0.9), sleep=0.5)]) as llm_a, \
                FakeOpenAIServer([scripted(B_PROPOSALS, (0.05, 0.5))]) as llm_b, sync_api.sync_playwright() as pw:
            # B: an agent whose pick was never tried (tuneloop reports the best trial); C: classical
            b_id = httpx.post(srv.url + "/api/sessions", json={
                "method": "llm", "function": "rastrigin", "budget": 3, "model": "openai:m", "base_url": llm_b.url,
                "max_iter": 5000}).json()["id"]
            c_id = httpx.post(srv.url + "/api/sessions", json={"method": "cmaes", "function": "rastrigin",
                                                               "budget": 12}).json()["id"]
            b_best, c_best = finished(srv, b_id)["summary"]["best"], finished(srv, c_id)["summary"]["best"]

            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            errors = []  # uncaught script errors on either page
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(srv.url + "/")
            page.wait_for_selector("#sessions")
            a_id = httpx.post(srv.url + "/api/sessions", json={
                "method": "llm", "function": "rosenbrock", "budget": 6, "model": "openai:m", "base_url": llm_a.url,
                "max_iter": 3000}).json()["id"]
            # the list is live: the new session appears without a reload; a click gives the view an address
            page.wait_for_selector(f'tr[data-id="{a_id}"]', timeout=20_000)
            page.click(f'tr[data-id="{a_id}"]')
            page.wait_for_selector("#trials")
            assert page.evaluate("location.hash") == f"#session/{a_id}"
            seen, live_recs = [], set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                seen.append(page.locator("#trials tr").count() - 1)  # trial rows, live from the event stream
                if "finished" in (page.text_content("#status") or ""):
                    break
                if page.locator("#recommendation").count():
                    live_recs.add(page.text_content("#recommendation"))
                time.sleep(0.3)
            assert seen[-1] >= 6 and len(set(seen)) > 2, seen  # rows arrived over time, not at once
            assert any("not yet" in t for t in live_recs), live_recs  # no recommendation while it runs
            page.wait_for_selector("svg.best")
            assert "budget_spent" in page.text_content("#stop")
            # the best trial and the agent's own recommendation (trial 4: not the best, and it says so)
            a_best = finished(srv, a_id)["summary"]["best"]
            page.wait_for_function("document.querySelector('#recommendation')?.textContent.includes('by the agent')")
            best = page.inner_text("#best")
            assert best.startswith(f"best: trial {a_best['trial']}, lr 1.2e-3, momentum 0.9, f = ") \
                and "(converged" in best, best
            rec = page.inner_text("#recommendation")
            assert "recommended by the agent: trial 4, lr 1e-3, momentum 0.9, f = " in rec, rec
            assert f"not the best trial (trial {a_best['trial']} is)" in rec and "converged fastest" in rec, rec
            assert page.is_visible("#calls") and "model calls (" in page.inner_text("#calls")
            check_plot_boxes(page, "svg.proposals", 6)  # trials on the box's edges and corners too
            check_ticks(page, "svg.best")
            shot = tmp_path / "service.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:4] == b"\x89PNG"
            if os.environ.get("TUNELOOP_SCREENSHOT"):  # the README's picture comes from this run
                shutil.copy(shot, Path(os.environ["TUNELOOP_SCREENSHOT"]))

            # an address opens its view directly: B, whose agent picked a configuration never tried
            page2 = browser.new_page(viewport={"width": 1400, "height": 900})
            page2.on("pageerror", lambda e: errors.append(str(e)))
            page2.goto(f"{srv.url}/#session/{b_id}")
            page2.wait_for_function("document.querySelector('#recommendation')?.textContent.includes('tuneloop')")
            assert b_id in page2.inner_text("h2") and "finished" in page2.inner_text("#status")
            assert page2.inner_text("#best").startswith(f"best: trial {b_best['trial']}, lr ")
            rec = page2.inner_text("#recommendation")
            assert "recommended by tuneloop, not the agent" in rec and "never tried" in rec, rec
            assert "tuneloop reports the best trial instead" in rec and "lr 5e-2, momentum 0.5" in rec, rec
            assert len(check_ticks(page2, "svg.best")) >= 3  # 0.6906 ... 0.69007: plain, distinct labels
            check_plot_boxes(page2, "svg.proposals", 3)

            # the list, then C (classical) by a click: best only, no recommendation, no model-calls panel
            page2.click("#nav-list")
            page2.wait_for_selector(f'tr[data-id="{c_id}"]')
            page2.click(f'tr[data-id="{c_id}"]')
            page2.wait_for_function(f"location.hash === '#session/{c_id}' && !!document.querySelector('#best')")
            page2.wait_for_selector("svg.best")
            assert page2.inner_text("#best").startswith(f"best: trial {c_best['trial']}, lr ")
            assert "f = " in page2.inner_text("#best")
            assert page2.locator("#recommendation").count() == 0 and page2.locator("#calls").count() == 0
            assert "model calls" not in page2.inner_text("main") and "recommend" not in page2.inner_text("main")
            check_ticks(page2, "svg.best")
            check_plot_boxes(page2, "svg.proposals", 12, every_label=False)
            # back and forward follow the views
            page2.go_back()
            page2.wait_for_selector("#sessions")
            page2.go_back()
            page2.wait_for_function(f"document.querySelector('h2')?.textContent.includes('{b_id}')")
            page2.go_forward()
            page2.wait_for_selector("#sessions")
            # the compare view has an address too
            page2.goto(f"{srv.url}/#compare/{a_id},{c_id}")
            page2.wait_for_selector("#compared")
            assert page2.locator("#compared tr").count() == 3
            assert sorted(page2.locator("#pick input:checked").evaluate_all("xs => xs.map(x => x.value)")) == \
                sorted([a_id, c_id])
            # the tick rule itself, on ranges whose labels once came out in offset or exponent notation
            for lo, hi in [(0.690601, 0.690702), (0.69007, 0.69057), (-8.1, -6.98), (1e-7, 3e-7), (2e6, 9e6)]:
                labels = page2.evaluate("([lo, hi]) => tuneloopAxisTicks(lo, hi).labels", [lo, hi])
                assert labels and all("+" not in t for t in labels) and len(set(labels)) == len(labels), labels
            assert errors == []
            browser.close()
    finally:
        srv.stop()


def test_the_list_pages_and_filters_a_big_runs_dir(tmp_path):
    """60 sessions: the list shows 50 and a pager; older shows the last 10; a method
    filter lists only that method's sessions."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from tests.test_run_index import make_runs

    runs = tmp_path / "runs"
    runs.mkdir()
    ids = make_runs(runs, 60, tmp_path / "templates")
    srv = Server(runs)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            errors = []
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(srv.url + "/")
            page.wait_for_selector("#sessions")
            assert page.locator("tr.row").count() == 50 and page.inner_text("#shown") == "1-50 of 60"
            assert page.locator(f'tr[data-id="{ids[-1]}"]').count() == 1  # newest first
            page.click("#older")
            page.wait_for_function("document.querySelector('#shown')?.textContent === '51-60 of 60'")
            assert page.locator("tr.row").count() == 10 and page.locator(f'tr[data-id="{ids[0]}"]').count() == 1
            assert page.is_disabled("#older") and not page.is_disabled("#newer")
            page.select_option("#f-method", "tpe")
            page.wait_for_function("document.querySelectorAll('tr.row').length === 20")
            shown = page.locator("tr.row").evaluate_all("rs => rs.map(r => r.dataset.id)")
            assert shown == [i for i in ids[::-1] if "-tpe-" in i] and page.locator("#pager").count() == 0
            assert errors == []
            browser.close()
    finally:
        srv.stop()
