"""A manager's whole path in a real headless Chromium: log in, file a request on the tiny model, watch the
progress finish (a real Celery worker measures it), read the dashboard with its charts drawn, switch to
Japanese, download the CSV. Screenshots go to test-artifacts/ (git-ignored) for CI to keep.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

import pytest
from django.conf import settings

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
PASSWORD = "a-long-browser-password"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI containers run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    # Checked before any fixture runs, so a machine without a browser starts no worker for nothing.
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium: apt-get install -y chromium",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="needs the playwright package (pip install -e '.[dev]')",
    ),
    pytest.mark.worker,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def manager(django_user_model):
    from tests.planner.factories import join_team

    user = django_user_model.objects.create_user("manager", password=PASSWORD)
    return join_team(user, "Alpha", "requester", "manager")


@pytest.fixture
def chromium():
    """A headless Chromium. Requested after every database fixture: while Playwright's synchronous API is
    running, the ORM in this thread would run in another context and leave a connection open."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_a_manager_files_a_request_and_reads_the_dashboard_in_two_languages(
    live_server, manager, tiny_model_dir, tiny_csv_path, celery_worker_process, chromium
):
    # No ORM calls from here on (see chromium): the page and the downloaded CSV show what happened.
    ARTIFACTS.mkdir(exist_ok=True)
    context = chromium.new_context(
        locale="en-US", accept_downloads=True, viewport={"width": 1400, "height": 900}
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    # Log in through the real login page.
    page.goto(f"{live_server.url}/")
    page.fill("input[name=username]", "manager")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.narrow button[type=submit]")
    page.wait_for_selector("#portfolio-filters")

    # File a request on the tiny model with an uploaded CSV, one candidate to keep it quick.
    page.goto(f"{live_server.url}/requests/new/")
    page.fill("#id_title", "Tickets, int8 on CPU (browser)")
    page.select_option("#id_model_ref", "tiny-bert")
    page.select_option("#id_dataset_ref", "upload")
    page.set_input_files("#id_dataset_upload", str(tiny_csv_path))
    page.fill("#id_p95_target_ms", "1000")
    page.fill("#id_accuracy_floor_pct", "50")
    page.fill("#id_requests_per_day", "100000000")
    page.select_option(
        "#id_hardware", label=page.locator("#id_hardware option", has_text="CPU, 2 vCPU").inner_text()
    )
    for box in page.locator("input[name=candidates]").all():
        box.set_checked(box.get_attribute("value") == "quantize.dynamic-int8")
    page.click("form.request-form button[type=submit]")
    page.wait_for_url("**/requests/*/")
    assert page.locator("#progress").is_visible(), "the progress bar shows while the worker runs"

    # progress.js polls and reloads the page when the run ends.
    page.wait_for_function(
        "document.getElementById('status').classList.contains('succeeded')", timeout=150_000, polling=500
    )
    page.wait_for_selector("#charts[data-rendered=true]")
    assert page.locator("#progress").is_hidden()
    charts = page.evaluate(
        """() => ['chart-pareto', 'chart-cost', 'chart-cashflow'].map((id) => {
            const canvas = document.getElementById(id);
            const chart = canvas && Chart.getChart(canvas);
            return chart ? {id, width: canvas.width, points: chart.data.datasets.reduce((n, d) => n + d.data.length, 0)} : {id};
        })"""
    )
    for chart in charts:
        assert chart.get("width", 0) > 100 and chart["points"] > 0, charts
    assert page.locator("#card-recommendation .figure").inner_text().strip()
    assert page.locator("#candidates tbody tr").count() == 2
    page.screenshot(path=str(ARTIFACTS / "dashboard-en.png"), full_page=True)

    # What-if: ten times the traffic; the figures and the charts are recomputed, the measurements are not.
    page.click("#whatif summary")
    page.fill("#id_requests_per_day", "1000000000")
    page.click("#whatif button[type=submit]")
    page.wait_for_selector("#whatif-banner")
    page.wait_for_selector("#charts[data-rendered=true]")
    assert "1,000,000,000 requests/day" in page.locator("#assumptions").inner_text()

    # The printable report, printed to PDF by the browser.
    page.click("#report-link")
    page.wait_for_selector("#charts[data-rendered=true]")
    assert page.locator("body.report #whatif-banner, body.report .whatif-banner").count() == 1
    page.emulate_media(media="print")
    page.pdf(path=str(ARTIFACTS / "report.pdf"), format="A4", landscape=True)
    page.screenshot(path=str(ARTIFACTS / "report-print.png"), full_page=True)
    page.emulate_media(media="screen")
    page.go_back()
    page.wait_for_selector("#charts[data-rendered=true]")

    # Switch to Japanese: the same figures, the page in Japanese, the charts drawn again.
    page.click("#language-switcher button[value=ja]")
    page.wait_for_selector("html[lang=ja]")
    page.wait_for_selector("#charts[data-rendered=true]")
    assert "推奨" in page.locator("#card-recommendation h3").inner_text()
    assert "月間削減額" in page.locator("#card-savings h3").inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-ja.png"), full_page=True)

    # The CSV of the candidates.
    with page.expect_download() as download:
        page.click("#export-csv")
    path = download.value.path()
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))
    assert [r["candidate"] for r in rows] == ["baseline", "quantize.dynamic-int8"]
    assert all(r["status"] == "measured" and r["monthly_cost"] for r in rows)
    assert {r["scenario"] for r in rows} == {"what-if"}  # the export follows the scenario on screen
    assert download.value.suggested_filename.endswith(".csv")

    context.close()
    assert not problems, problems
