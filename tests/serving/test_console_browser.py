"""The console in a real browser (Playwright driving Debian's chromium) against a real ``lamina
serve``: the whole journey, an accessibility check (axe-core) on every page at desktop and phone
width, and a user who cannot reach the admin pages.

Screenshots of every page at both widths go to ``$LAMINA_CONSOLE_SHOTS`` when it is set
(``docs/console/`` holds the committed ones: ``LAMINA_CONSOLE_SHOTS=docs/console make test
PYTEST_ARGS=tests/serving/test_console_browser.py``)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import run_lamina
from tests.serving.conftest import ADMIN, Server

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe-4.10.3.min.js"
WIDTHS = {"desktop": 1280, "phone": 390}
PAGES = [
    ("chat", "/console/"), ("images", "/console/images"), ("datasets", "/console/datasets"),
    ("dataset", "/console/datasets/digits@v1"), ("runs", "/console/runs"), ("registry", "/console/models"),
    ("model", "/console/models/shakes@v1"), ("monitoring", "/console/monitoring"),
    ("review", "/console/review"), ("rails", "/console/rails"), ("prompts", "/console/prompts"),
    ("audit", "/console/audit"), ("admin", "/console/admin"), ("login", "/console/login"),
]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (apt-get install chromium): the console is tested in it")
        pytest.skip("no chromium here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def console_lm(railed: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second text model with two versions, so the journey can promote and roll back without
    moving the alias the other serving tests use."""
    folder = tmp_path_factory.mktemp("console-lm") / "lm"
    ws = str(railed.workspace)
    exported = run_lamina("--workspace", ws, "models", "export", "shakes@v1", str(folder))
    assert exported.returncode == 0, exported.stderr
    for _ in range(2):
        made = run_lamina("--workspace", ws, "models", "import", str(folder), "--name", "console-lm")
        assert made.returncode == 0, made.stderr
    return "console-lm"


def signed_in(
    browser: Any, server: Server, key: str, width: int = 1280, start: str = "/console/models"
) -> Any:
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(f"{server.url}{start}")  # not signed in: sent to the sign-in page
    assert "/console/login" in page.url
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return page


def shot(page: Any, name: str) -> None:
    """A screenshot for docs/console/ when ``$LAMINA_CONSOLE_SHOTS`` names a folder."""
    folder = os.environ.get("LAMINA_CONSOLE_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.jpg"), type="jpeg", quality=85)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]} for v in result
    ]


def test_the_whole_journey_in_a_browser(browser: Any, railed: Server, console_lm: str) -> None:
    page = signed_in(browser, railed, ADMIN)
    assert page.url.endswith("/console/models")  # back where the sign-in began
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))

    # chat: a streamed answer, the readout, a thumbs-down into the feedback API
    page.goto(f"{railed.url}/console/")
    page.get_by_text("Model and sampling").click()
    # the quickstart's 30-step model writes letters; shakes@champion may by now be test_api.py's
    # 3-step model, whose answer can be empty (an end token first), and that is no console fault
    page.get_by_label("Model", exact=True).select_option("shakes@v1")
    page.get_by_label("Message").fill("ROMEO:")
    with page.expect_response(re.compile(r"/v1/chat/completions$")) as answered:
        page.get_by_role("button", name="Send").click()
    request_id = answered.value.headers["x-request-id"]
    assert answered.value.headers["content-type"].startswith("text/event-stream")
    page.get_by_role("button", name="Thumbs down").wait_for()
    answer = page.locator(".msg.assistant .text").last.text_content()
    events = [line[5:].strip() for line in answered.value.text().splitlines() if line.startswith("data:")]
    streamed = "".join(
        c["delta"].get("content") or ""
        for e in events if e != "[DONE]" for c in json.loads(e).get("choices", [])
    )  # fmt: skip
    assert answer == streamed and answer.strip(), "the streamed answer was shown as it came"
    assert re.search(r"\d+ tokens · first token \d+ ms", page.locator("#readout").inner_text())
    with page.expect_response(re.compile(r"/v1/feedback$")) as judged:
        page.get_by_role("button", name="Thumbs down").click()
    assert judged.value.status == 201
    assert page.get_by_role("button", name="Thumbs down").get_attribute("aria-pressed") == "true"
    # RAG: an answer from the quickstart's docs collection, with sources that open on a click
    page.get_by_label("Answer from documents (RAG)").select_option("lamina-docs")
    page.get_by_label("Message").fill(
        "How does Lamina keep a reader from seeing chunks outside their groups?"
    )
    page.get_by_role("button", name="Send").click()
    sources = page.get_by_role("list", name="Sources").last
    sources.wait_for()
    first = sources.locator("details").first
    first.locator("summary").click()
    assert first.locator("blockquote").inner_text().strip()
    shot(page, "journey-chat-answer-with-sources")
    page.get_by_label("Answer from documents (RAG)").select_option("")
    # the thread keeps the turn: a reload and a click on it shows the conversation again
    page.reload()
    page.locator("#thread-list button").first.click()
    page.locator(".msg.user").first.wait_for()
    assert page.locator(".msg.user").first.inner_text().endswith("ROMEO:")

    # image studio: a class-conditioned diffusion model draws digits
    page.goto(f"{railed.url}/console/images")
    page.get_by_label("Prompt or class").fill("3")
    page.get_by_label("Images").fill("2")
    page.get_by_label("Steps (diffusion)").fill("5")
    page.get_by_role("button", name="Generate").click()
    page.locator("#gallery img").nth(1).wait_for()
    assert page.locator("#gallery img").count() == 2
    # …and walks its latent space: the slider moves along the frames
    page.get_by_label("Frames").fill("4")
    page.get_by_role("button", name="Interpolate").click()
    slider = page.get_by_label("Position along the walk")
    slider.wait_for()
    slider.fill("3")
    assert page.locator("#walk-frame").get_attribute("alt") == "Frame 4 of 4 of the latent walk"
    shot(page, "journey-images-gallery-and-walk")

    # runs: two of them side by side
    page.goto(f"{railed.url}/console/runs")
    boxes = page.locator("input[name='run']")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.get_by_role("button", name="Compare selected").click()
    assert page.get_by_role("heading", name="Compare runs").is_visible()
    plot = page.get_by_role("img", name=re.compile("Loss curves of"))
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=plot.element_handle())
    shot(page, "journey-compare-runs")

    # a dataset's report: the quality report loads in its frame
    page.goto(f"{railed.url}/console/datasets")
    page.get_by_role("link", name="digits@v1").click()
    assert page.get_by_role("heading", name="Dataset digits@v1").is_visible()
    report = page.frame_locator("iframe.report")
    assert report.locator("h1").first.inner_text()

    # the registry: promote v2 of console-lm, then roll back to v1, each after a confirmation
    page.goto(f"{railed.url}/console/models")
    listed = httpx.get(f"{railed.url}/admin/models", headers=railed.headers(ADMIN), timeout=30).json()["data"]
    older, newer = [m["ref"] for m in sorted(listed, key=lambda m: m["version"]) if m["name"] == console_lm][
        -2:
    ]
    for ref in (older, newer):
        with page.expect_navigation():  # the page reloads once the API has moved the alias
            page.locator(f"button.promote[data-ref='{ref}']").click()
    row = page.locator("tr", has=page.get_by_role("link", name=newer, exact=True))
    assert row.locator(".badge", has_text="champion").count() == 1
    with page.expect_navigation():
        page.get_by_role("button", name=f"Roll back {console_lm}@champion").click()
    row = page.locator("tr", has=page.get_by_role("link", name=older, exact=True))
    assert row.locator(".badge", has_text="champion").count() == 1
    assert any(f"Move {console_lm}@champion back" in d for d in dialogs)
    assert any(f"Point {console_lm}@champion at {newer}" in d for d in dialogs)

    # the audit log finds the chat request, and the review queue holds its thumbs-down
    page.goto(f"{railed.url}/console/audit?request_id={request_id}")
    assert page.locator("#audit-rows").get_by_text("/v1/chat/completions").count() == 1
    page.goto(f"{railed.url}/console/review")
    page.get_by_label("Request id").fill(request_id)
    page.get_by_role("button", name="Find").click()
    page.wait_for_load_state()
    item = page.locator("ol.review > li", has_text="thumbs down")
    assert item.count() == 1 and request_id in item.inner_text()

    # the rails test box shows a verdict and marks the span
    page.goto(f"{railed.url}/console/rails")
    page.get_by_label("Text").fill("Mail me at jane.doe@example.com")
    page.get_by_label("output (an answer)").check()
    page.get_by_role("button", name="Check").click()
    page.locator("#rails-result mark").first.wait_for()
    assert page.locator("#rails-result mark").first.inner_text() == "jane.doe@example.com"
    shot(page, "journey-rails-verdicts")

    # admin: a new key is shown once
    page.goto(f"{railed.url}/console/admin")
    page.get_by_label("Name").fill("made-in-the-console")
    page.get_by_role("button", name="Create key").click()
    assert page.get_by_label("New key").input_value().startswith("lam-")
    page.close()


def test_every_page_passes_axe_at_desktop_and_phone_width(browser: Any, railed: Server) -> None:
    found: dict[str, Any] = {}
    for device, width in WIDTHS.items():
        page = signed_in(browser, railed, ADMIN, width)
        for name, path in PAGES:
            if name == "login":
                page.context.clear_cookies()
            page.goto(f"{railed.url}{path}")
            page.wait_for_load_state("networkidle")
            violations = axe_violations(page)
            if violations:
                found[f"{name}@{device}"] = violations
            shot(page, f"{name}-{device}")
            # nothing runs off the side at phone width (the page scrolls down, not across)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            if overflow > 1:
                found[f"{name}@{device}: wider than the screen by {overflow} px"] = path
        page.close()
    assert not found, json.dumps(found, indent=1)


def test_a_user_key_sees_no_admin_page_in_the_browser(browser: Any, railed: Server) -> None:
    page = signed_in(browser, railed, railed.user_key, start="/console/")
    nav = page.get_by_role("navigation", name="Console")
    assert nav.get_by_role("link", name="Chat").is_visible()
    assert nav.get_by_role("link", name="Admin").count() == 0
    assert nav.get_by_role("link", name="Registry").count() == 0
    response = page.goto(f"{railed.url}/console/admin")
    assert response.status == 403
    assert page.get_by_role("heading", name="Not allowed").is_visible()
    # the API refuses the action too, even with the page's own CSRF token
    page.goto(f"{railed.url}/console/")
    status = page.evaluate(
        """async () => (await fetch('/admin/models/promote', {method: 'POST', headers: {
            'Content-Type': 'application/json',
            'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
            body: JSON.stringify({ref: 'shakes@v1', alias: 'champion'})})).status"""
    )
    assert status == 403
    page.close()
