"""The status page in a real browser: headless Chromium (Debian's) driven by Playwright.

``durable serve`` runs as a subprocess on a loopback port with a few
workflows; instances are started over HTTP, then the page is checked the way
a person uses it. Screenshots land in ``.artifacts/status-page/`` (listed at
the end of the run). Chromium and Playwright are required: without them the
tests fail, they do not skip (CI installs both).
"""

from __future__ import annotations

import json
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from durable import Context, Status, activity, workflow
from durable.history import AttemptLost
from durable.runtime.activity import run_activity
from durable.runtime.start import create_instance, encode_input
from durable.runtime.step import step
from durable.store.sqlite import SQLiteStore
from durable.workflow import get_workflow
from tests.test_serve import Server, running_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

FLOWS = textwrap.dedent(
    """
    import time
    from datetime import timedelta

    from durable import Context, RetryPolicy, activity, activity_info, workflow


    @activity(retry=RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=400)))
    def sp_flaky(text: str) -> str:
        time.sleep(0.25)  # long enough to be drawn as a bar
        if activity_info().attempt == 1:
            raise ConnectionError("the first attempt always fails")
        return text.upper()


    @activity
    def sp_boom(text: str) -> str:
        raise ValueError(f"cannot handle {text!r}")


    @workflow(name="sp_child")
    def sp_child(ctx: Context, n: int):
        yield ctx.sleep(timedelta(milliseconds=200))
        return n * 2


    @workflow(name="sp_ok")
    def sp_ok(ctx: Context, label: str):
        ctx.set_status({"step": "shouting"})
        shouted = yield ctx.call(sp_flaky, label, name="Shout")
        yield ctx.sleep(timedelta(milliseconds=600), name="Pause")
        doubled = yield ctx.child(sp_child, 21, name="Double")
        ctx.set_status({"step": "done"})
        return {"label": shouted, "doubled": doubled}


    @workflow(name="sp_bad")
    def sp_bad(ctx: Context, label: str):
        yield ctx.call(sp_boom, label, retry=RetryPolicy(max_attempts=1))
        return "never"


    @workflow(name="sp_wait")
    def sp_wait(ctx: Context, label: str):
        ctx.set_status("waiting for approval")
        data = yield ctx.wait_for_event("approve")
        return {"label": label, "data": data}
    """
)

OK = "sp-ok"
BAD = "sp-bad"
WAITING = "sp wait <script>window.__pwned = 1</script> ü"
"""Shown verbatim, never run: every text reaches the page escaped."""
TO_APPROVE = "sp-approve"
REDISPATCHED = "sp-redispatched"
"""Recorded before the server starts, as the AWS loop would: its attempt was lost and
dispatched again (``ActivityRedispatched``)."""


@activity(name="sp_greet")
def sp_greet(name: str) -> str:
    return f"hello {name}"


@workflow(name="sp_lost")
def sp_lost(ctx: Context, name: str) -> Any:
    return (yield ctx.call(sp_greet, name, name="Greet"))


def _record_a_redispatched_attempt(db: Path) -> None:
    """``REDISPATCHED``'s history: the attempt goes out, is found lost 16 minutes later
    and dispatched again, then answers."""
    store = SQLiteStore(db)
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    iid, _ = create_instance(store, sp_lost, encode_input(sp_lost, "ada"), REDISPATCHED, start)
    decision = step(store, iid, get_workflow, start)
    assert decision is not None
    [work] = decision.dispatch
    found = start + timedelta(minutes=16)
    note = AttemptLost(task_id=work.task_id, run=1, attempt=1, received_at=found)
    step(store, iid, get_workflow, found, carried=[note])
    answered = found + timedelta(seconds=2)
    store.post(iid, run_activity(work, now=lambda: answered))
    done = step(store, iid, get_workflow, answered)
    assert done is not None and done.status == Status.COMPLETED
    store.close()


def _fail_without_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (CI's .ci/run does)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("status-page")
    _record_a_redispatched_attempt(directory / "serve.db")
    with running_server(directory, FLOWS, token=None) as server:
        for workflow, iid in (
            ("sp_ok", OK),
            ("sp_bad", BAD),
            ("sp_wait", WAITING),
            ("sp_wait", TO_APPROVE),
        ):
            code, _, body = server.call(
                "POST", f"/workflows/{workflow}", {"input": "ada", "instance_id": iid}
            )
            assert code == 202, body
        for iid, status in ((OK, "COMPLETED"), (BAD, "FAILED")):
            code, _, body = server.call("GET", f"/instances/{quote(iid, safe='')}?wait=60")
            assert body["status"] == status, body
        for iid in (WAITING, TO_APPROVE):
            _wait_for(server, iid, lambda h: h["custom_status"] == "waiting for approval")
        yield server


def _wait_for(server: Server, iid: str, done: Callable[[dict[str, Any]], bool]) -> None:
    deadline = time.monotonic() + 60
    while True:
        _, _, header = server.call("GET", f"/instances/{quote(iid, safe='')}")
        if done(header):
            return
        assert time.monotonic() < deadline, header
        time.sleep(0.1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    _fail_without_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # Times show in the browser's zone: UTC, whatever the machine's, so they can be checked.
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.set_default_timeout(20_000)
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], errors


def instance_url(server: Server, iid: str) -> str:
    return f"{server.url}/#/instances/{quote(iid, safe='')}"


def rows(page: Page) -> dict[str, str]:
    """Instance id -> status, as the list shows them."""
    found: dict[str, str] = page.eval_on_selector_all(
        "#instance-table tbody tr[data-instance]",
        "rows => Object.fromEntries(rows.map(r => ["
        "r.querySelector('td.id a').textContent, r.querySelector('.badge').textContent]))",
    )
    return found


def test_the_list_shows_every_instance_with_its_status_and_filters(
    served: Server, page: Page, artifact: Callable[[str], Path]
) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/")
    expect(page.locator(f'tr[data-instance="{OK}"] .badge')).to_have_text("COMPLETED")
    shown = rows(page)
    assert shown[OK] == "COMPLETED" and shown[BAD] == "FAILED"
    assert shown[WAITING] == "RUNNING"  # the id is text: its <script> never ran
    assert page.evaluate("window.__pwned") is None
    # the four started here, OK's child, and REDISPATCHED (recorded before the server started)
    assert page.locator("#instance-table tbody tr").count() == len(shown) == 6
    ids = page.eval_on_selector_all("tr[data-instance]", "rs => rs.map(r => r.dataset.instance)")
    assert ids.index(WAITING) < ids.index(OK)  # newest first
    expect(page.locator("#filter-workflow option")).to_have_count(5)  # all + 4 workflows
    page.screenshot(path=artifact("status-page/list-1280.png"), full_page=True)

    page.select_option("#filter-status", "FAILED")
    expect(page.locator("#instance-table tbody tr")).to_have_count(1)
    assert rows(page) == {BAD: "FAILED"}
    assert "status=FAILED" in page.url
    page.select_option("#filter-status", "RUNNING")
    expect(page.locator("#instance-table tbody tr")).to_have_count(2)
    assert set(rows(page)) == {WAITING, TO_APPROVE}
    page.select_option("#filter-status", "")
    page.select_option("#filter-workflow", "sp_ok")
    expect(page.locator("#instance-table tbody tr")).to_have_count(1)
    assert rows(page) == {OK: "COMPLETED"}

    # The auto-refresh picks up a new instance without a reload, and can be switched off.
    page.select_option("#filter-workflow", "")
    served.call("POST", "/workflows/sp_child", {"input": 1, "instance_id": "sp-late"})
    expect(page.locator('tr[data-instance="sp-late"]')).to_have_count(1, timeout=15_000)
    page.uncheck("#auto-refresh")
    expect(page.locator("#refresh-dot")).not_to_have_class("dot on")

    page.click(f'tr[data-instance="{OK}"] a')
    expect(page.locator("#instance-id")).to_have_text(OK)


def test_the_timeline_of_a_completed_instance(
    served: Server, page: Page, artifact: Callable[[str], Path]
) -> None:
    from playwright.sync_api import expect

    page.goto(instance_url(served, OK))
    expect(page.locator("#instance-status .badge")).to_have_text("COMPLETED")
    assert '"label": "ADA"' in page.locator("#output").inner_text()
    assert '"step": "done"' in page.locator("#custom-status").inner_text()
    assert page.locator("#action-controls").is_hidden()  # nothing to do with an ended instance

    lane = page.locator("#timeline g.lane.activity")
    expect(lane).to_have_count(1)
    bars = lane.locator("rect.bar")
    expect(bars).to_have_count(2)  # one bar per attempt
    first, second = (bars.nth(i) for i in range(2))
    assert first.get_attribute("data-attempt") == "1" and "failed" in _cls(first)
    assert second.get_attribute("data-attempt") == "2" and "ok" in _cls(second)
    assert "the first attempt always fails" in _title(first)
    assert lane.locator("line.backoff").count() == 1  # the wait before the retry
    one, two = (_box(bars.nth(i)) for i in range(2))
    assert one["width"] > 20 and two["width"] > 20 and two["x"] > one["x"] + one["width"]

    timer = page.locator("#timeline g.lane.timer rect.bar")
    expect(timer).to_have_count(1)
    assert _box(timer)["width"] > one["width"]  # 600 ms against 250 ms
    assert "fired" in _title(timer)
    assert "Pause" in str(page.locator("#timeline g.lane.timer text.label").text_content())

    workflow_bar = page.locator("#timeline g.lane.workflow rect.bar")
    assert _box(workflow_bar)["width"] > _box(timer)["width"]
    expect(page.locator("#event-table tbody tr")).to_have_count(_history_length(served, OK))
    page.screenshot(path=artifact("status-page/instance-1280.png"), full_page=True)

    child = page.locator("#timeline g.lane.child a.child-link")
    expect(child).to_have_count(1)
    child.click()
    expect(page.locator("#instance-id")).to_have_text(f"{OK}:1:3")
    expect(page.locator("#instance-status .badge")).to_have_text("COMPLETED")
    expect(page.locator("dd a")).to_have_text(OK)  # back to the parent


def test_an_attempt_dispatched_again_says_so_on_its_bar(served: Server, page: Page) -> None:
    from playwright.sync_api import expect

    page.goto(instance_url(served, REDISPATCHED))
    expect(page.locator("#instance-status .badge")).to_have_text("COMPLETED")
    bars = page.locator("#timeline g.lane.activity rect.bar")
    expect(bars).to_have_count(1)  # one attempt, dispatched twice: one bar
    assert "ok" in _cls(bars)
    assert "dispatched again 2026-01-05 09:16:00 (no outcome came)" in _title(bars)
    expect(page.locator("#event-table")).to_contain_text("ActivityRedispatched")


def test_a_failed_instance_shows_its_error(served: Server, page: Page) -> None:
    from playwright.sync_api import expect

    page.goto(instance_url(served, BAD))
    expect(page.locator("#instance-status .badge")).to_have_text("FAILED")
    expect(page.locator("#error")).to_have_text("ValueError: cannot handle 'ada'")
    assert "Traceback" in page.locator("#result pre.trace").inner_text()
    expect(page.locator("#timeline g.lane.activity rect.bar.failed")).to_have_count(1)


def test_raising_the_event_from_the_page_completes_the_instance(served: Server, page: Page) -> None:
    from playwright.sync_api import expect

    page.goto(instance_url(served, TO_APPROVE))
    expect(page.locator("#instance-status .badge")).to_have_text("RUNNING")
    expect(page.locator("#timeline g.lane.wait rect.bar.pending")).to_have_count(1)
    page.fill("#event-data", "{not json")
    page.fill("#event-name", "approve")
    page.click("#raise-event")
    expect(page.locator("#action-result")).to_contain_text("not JSON")
    page.fill("#event-data", '{"by": "ü <b>me</b>"}')
    page.click("#raise-event")
    expect(page.locator("#action-result")).to_contain_text("raised")
    expect(page.locator("#instance-status .badge")).to_have_text("COMPLETED", timeout=30_000)
    assert '"by": "ü <b>me</b>"' in page.locator("#output").inner_text()
    expect(page.locator("#timeline g.lane.wait path.mark.event")).to_have_count(1)
    expect(page.locator("#timeline g.lane.wait rect.bar.pending")).to_have_count(0)


def test_the_swagger_page_renders_every_route_offline(
    served: Server, page: Page, artifact: Callable[[str], Path]
) -> None:
    from playwright.sync_api import expect

    outside: list[str] = []
    page.on(
        "request",
        lambda request: (
            outside.append(request.url)
            if not request.url.startswith(served.url) and not request.url.startswith("data:")
            else None
        ),
    )
    page.goto(served.url + "/")
    with page.context.expect_page() as opened:
        page.click("text=API")  # the link in the status page's header
    swagger = opened.value
    with urllib.request.urlopen(served.url + "/openapi.json", timeout=10) as answer:
        spec = json.load(answer)
    operations = sum(len(methods) for methods in spec["paths"].values())
    expect(swagger.locator(".opblock")).to_have_count(operations, timeout=20_000)
    expect(swagger.locator(".opblock-summary-path").first).to_be_visible()
    paths = swagger.locator(".opblock-summary-path").all_inner_texts()
    assert any("/workflows/{name}" in p.replace("\u200b", "") for p in paths), paths
    swagger.screenshot(path=artifact("status-page/swagger-1280.png"))
    assert outside == []


def test_at_390px_nothing_overflows_the_viewport(
    served: Server, browser: Browser, artifact: Callable[[str], Path]
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        for name, url in (
            ("list", served.url + "/"),
            ("instance", instance_url(served, OK)),
            ("waiting", instance_url(served, WAITING)),
        ):
            page.goto(url)
            page.wait_for_selector("#instance-table tbody tr, #timeline svg")
            if name != "list":
                expect(page.locator("#event-table tbody tr").first).to_be_visible()
            width = page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= 390, (name, width, _overflowing(page))
            assert _overflowing(page) == [], name
            svg = _box(page.locator("#timeline svg")) if name != "list" else None
            assert svg is None or svg["x"] + svg["width"] <= 390
            page.screenshot(path=artifact(f"status-page/{name}-390.png"), full_page=True)
    finally:
        context.close()


def test_under_an_api_gateway_stage_every_url_stays_under_it(served: Server, page: Page) -> None:
    """On AWS the page is at https://HOST/prod/: it must ask for nothing outside /prod/."""
    from playwright.sync_api import Route, expect

    outside: list[str] = []

    def strip_stage(route: Route) -> None:
        url = route.request.url
        rest = url[len(served.url) :]
        if not rest.startswith("/prod/") and rest != "/prod":
            outside.append(url)
            route.abort()
            return
        answer = route.fetch(url=served.url + (rest[len("/prod") :] or "/"))
        route.fulfill(response=answer)

    page.route(served.url + "/**", strip_stage)
    page.goto(served.url + "/prod")  # no trailing slash: the page adds it and loads again
    expect(page.locator(f'tr[data-instance="{OK}"] .badge')).to_have_text("COMPLETED")
    assert page.url == served.url + "/prod/"
    outside.clear()  # the first load's assets, asked for before the page could move
    page.reload()
    expect(page.locator(f'tr[data-instance="{OK}"] .badge')).to_have_text("COMPLETED")
    page.click(f'tr[data-instance="{OK}"] a')
    expect(page.locator("#timeline g.lane.activity rect.bar")).to_have_count(2)
    expect(page.locator("#event-table tbody tr")).to_have_count(_history_length(served, OK))
    assert outside == []


def test_with_a_token_the_page_asks_for_it(tmp_path: Path, page: Page) -> None:
    from playwright.sync_api import expect

    with running_server(tmp_path, FLOWS, token="pa55") as server:
        server.call("POST", "/workflows/sp_child", {"input": 2, "instance_id": "sp-t"}, "pa55")
        page.goto(server.url + "/")
        expect(page.locator(".token h2")).to_have_text("This server needs a token")
        page.fill(".token input", "wrong")
        page.click(".token button")
        expect(page.locator(".token h2")).to_be_visible()
        page.fill(".token input", "pa55")
        page.click(".token button")
        expect(page.locator('tr[data-instance="sp-t"]')).to_have_count(1)
        page.reload()  # kept for the tab
        expect(page.locator('tr[data-instance="sp-t"]')).to_have_count(1)


def _overflowing(page: Page) -> list[str]:
    """Elements reaching past the right edge that no scrolling container holds."""
    found: list[str] = page.evaluate(
        """() => {
            const limit = document.documentElement.clientWidth;
            const out = [];
            for (const el of document.querySelectorAll("body *")) {
                const box = el.getBoundingClientRect();
                if (box.width === 0 || box.right <= limit + 0.5) continue;
                let p = el.parentElement, held = false;
                while (p && p !== document.body) {
                    const o = getComputedStyle(p).overflowX;
                    if (o === "auto" || o === "scroll" || o === "hidden") { held = true; break; }
                    p = p.parentElement;
                }
                if (!held) out.push(el.tagName + "." + el.className);
            }
            return out;
        }"""
    )
    return found


def _box(locator: Any) -> dict[str, float]:
    box = locator.bounding_box()
    assert box is not None
    return dict(box)


def _title(locator: Any) -> str:
    """The tooltip of an SVG shape (the <title> beside it)."""
    return str(locator.locator("xpath=../*[name()='title']").text_content() or "")


def _cls(locator: Any) -> str:
    return str(locator.get_attribute("class") or "")


def _history_length(server: Server, iid: str) -> int:
    _, _, body = server.call("GET", f"/instances/{quote(iid, safe='')}/history?limit=1000")
    return len(body["events"])
