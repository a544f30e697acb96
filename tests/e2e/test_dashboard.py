"""The dashboard (/ui) in headless Chromium against a real cluster with tokens: sign in, filter the
job table, follow a running job's timeline and output live, cancel it, download a file a job
wrote, and read the runners page.

Debian's `chromium` is driven by playwright (no browser download: `executable_path`); without
it the test is skipped, saying so (CI's .ci/run installs it). FREIGHT_WRITE_FIGURES=1 also
writes docs/figures/dashboard.png and dashboard-job.png, the README's pictures.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from freight_server.shared.config import Settings
from tests.e2e.conftest import Cluster, User, running_cluster

pytestmark = pytest.mark.docker
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")

CHROMIUM = Path(os.environ.get("FREIGHT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIGURES = Path(__file__).resolve().parents[2] / "docs" / "figures"
TICKING = "i=0; while [ $i -lt 240 ]; do echo tick $i; i=$((i+1)); sleep 0.25; done"
NEVER_FITS = "no runner has 2 GPUs (most on one runner: 1); waiting for one that does to join"


@pytest.fixture(scope="module")
def secured(
    module_cluster_settings: Settings,
    tokens_file: Path,
    tokens: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    overrides: dict[str, dict[str, Any]] = {
        "api": {"api_tokens_file": tokens_file},
        "runner": {"runner_gpus": 1, "runner_slots": 3},
    }
    logs = tmp_path_factory.mktemp("logs")
    with running_cluster(module_cluster_settings, logs, overrides=overrides) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (CI installs it)")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_the_dashboard_shows_jobs_and_runners_and_cancels(
    chromium: Any, secured: Cluster, alice: User, bob: User, tokens: dict[str, str]
) -> None:
    done = alice.submit("echo hello > result.txt; echo finished")
    failed = alice.submit("echo oops >&2; exit 3")
    queued = alice.submit("true", gpus=2)
    running = alice.submit(TICKING)
    theirs = bob.submit("echo bob was here")
    alice.wait_for(done, "COMPLETE")
    alice.wait_for(failed, "FAILED")
    alice.wait_for(running, "RUNNING")
    bob.wait_for(theirs, "COMPLETE")

    context = chromium.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    # Signing in: a wrong token is refused and asked again; the admin's shows every owner's jobs.
    page.goto(f"{secured.url}/ui")
    page.fill("#login input[name=token]", "frt_wrong")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login .error:has-text('refused this token')")
    page.fill("#login input[name=token]", tokens["root"])
    page.click("#login button[type=submit]")
    row = _row_selector
    for job_id in (done, failed, queued, running, theirs):
        page.wait_for_selector(row(job_id))
    queued_row = page.locator(row(queued))
    _wait_text(queued_row, NEVER_FITS)  # a queued job says why it waits
    assert "QUEUED" in queued_row.inner_text()
    assert "exit code 3" in page.locator(row(failed)).inner_text()
    _wait_text(page.locator(".state[data-status=COMPLETE] .state-count"), "2")

    # Filters: by owner (on the server), by text (in the page), by state (the counts above).
    page.fill(".filters input[name=owner]", "alice")
    page.wait_for_selector(row(theirs), state="detached")
    page.fill(".filters input[name=q]", "tick")
    page.wait_for_selector(row(done), state="detached")
    assert page.locator("tbody tr[data-job]").count() == 1
    page.fill(".filters input[name=q]", "")
    page.click(".state[data-status=FAILED]")
    page.wait_for_selector(row(running), state="detached")
    assert page.locator("tbody tr[data-job]").count() == 1
    assert "owner=alice" in page.url and "status=FAILED" in page.url  # a link keeps the view
    page.click(".state[data-status=FAILED]")
    page.fill(".filters input[name=owner]", "")
    page.wait_for_selector(row(theirs))
    if os.environ.get("FREIGHT_WRITE_FIGURES") == "1":
        page.screenshot(path=str(FIGURES / "dashboard.png"))

    # The running job: its timeline, and its output arriving line after line.
    page.click(f"{row(running)} a")
    page.wait_for_selector(".timeline li[data-type=JobStarted]")
    for kind in ("JobSubmitted", "JobAssigned"):
        assert page.locator(f".timeline li[data-type={kind}]").count() == 1
    log = page.locator(".log")
    _wait_text(log, "tick 2")
    printed = _last_tick(log.inner_text())
    page.wait_for_function(
        f"() => /tick {printed + 4}\\b/.test(document.querySelector('.log').textContent)"
    )
    if os.environ.get("FREIGHT_WRITE_FIGURES") == "1":
        page.screenshot(path=str(FIGURES / "dashboard-job.png"), full_page=True)

    # Cancelling asks first, then the job ends FAILED "cancelled".
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Cancel job')")
    _wait_text(page.locator(".job .title"), "FAILED")
    _wait_text(page.locator(".job .reason"), "cancelled")
    _wait_text(page.locator(".timeline li[data-type=JobFinished]"), "cancelled")
    assert alice.get(f"/jobs/{running}").json()["reason"] == "cancelled"

    # A finished job's files: into /job, and a download carrying the token.
    page.goto(f"{secured.url}/ui#/jobs/{done}")
    page.click("tr[data-path='/job'] a")
    with page.expect_download() as downloading:
        page.click("tr[data-path='/job/result.txt'] button:has-text('Download')")
    download = downloading.value
    assert download.suggested_filename == "result.txt"
    assert Path(download.path()).read_text() == "hello\n"
    _wait_text(log, "finished")

    # The runners page: the runner, live, its one simulated GPU.
    page.click("nav a[data-nav=runners]")
    runner = page.locator(f"tr[data-runner='{secured.settings.runner_id}']")
    _wait_text(runner, "live")
    assert runner.locator(".gpu").count() == 1
    _wait_text(page.locator(".runners [data-slot=summary]"), "1 of 1 runners live")

    # Signing out forgets the token.
    page.click("#sign-out")
    page.wait_for_selector("#login")
    assert page.evaluate("() => sessionStorage.length") == 0
    assert errors == []
    context.close()


def _row_selector(job_id: str) -> str:
    return f"tbody tr[data-job='{job_id}']"


def _wait_text(locator: Any, text: str) -> None:
    playwright.expect(locator).to_contain_text(text)


def _last_tick(text: str) -> int:
    ticks = re.findall(r"tick (\d+)", text)
    assert ticks, text
    return int(ticks[-1])
