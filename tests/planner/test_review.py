"""The review of an approved switch (hand-computed), its CSV import, who may see and enter it, the nightly
re-evaluation under a changed price (run eagerly), and the re-runs of a PoC."""

from __future__ import annotations

import shutil
import uuid
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import override

from planner import roi, services
from planner.models import (
    HardwareProfile,
    MonthlyActual,
    PocRequest,
    RecommendationChange,
    SwitchPrediction,
)
from planner.reviews import services as reviews
from planner.reviews.actuals_csv import ActualsFileError, parse_actuals
from planner.reviews.figures import predicted_requests_per_month
from tests.planner.factories import INT8, join_team, measured_request, record, sweep
from workers.execution import poc_request_finish

D = Decimal
# Baseline: p95 20 ms at batch 1 (capacity 1/16 ms = 62.5 rps; batch 8 misses the 30 ms target); int8: p95
# 10 ms, batch 8 meets it (8 / 22.6 ms = 353.6 rps). 8,640,000 a day × peak 2 = 200 rps at utilisation 0.7:
# 5 replicas against 1, so the switch saves 4 replicas × price × 730 a month.
MODELS = [(0.95, sweep(20.0)), (0.95, sweep(10.0))]


@pytest.fixture
def box(db):
    return HardwareProfile.objects.create(
        name="CPU box", device_kind="cpu", price_per_hour=D("0.2"), currency="USD"
    )


def approved(user, box, **economics):
    poc_request = measured_request(owner=user, hardware=box, models=MODELS, **economics)
    poc_request = PocRequest.objects.prefetch_related("candidates").get(pk=poc_request.pk)
    services.poc_request_decide(poc_request=poc_request, user=user, decision="approved", comment="")
    return poc_request


def test_approval_freezes_the_prediction_with_the_recurring_cost(user, box):
    # One-time 10 h × 100 + 0.01 device-hours × 0.2 = 1,000.002; maintenance 1 h × 100 = 100 a month.
    poc_request = approved(user, box, engineering_hours=D(10), maintenance_hours_per_month=D(1))
    p = SwitchPrediction.objects.get(request=poc_request)
    assert p.baseline_monthly_cost == D(730)  # 5 × 0.2 × 730
    assert p.monthly_cost == D(146)  # 1 × 0.2 × 730
    assert p.monthly_maintenance == D(100)
    assert p.monthly_savings == D(484)  # 730 − 146 − 100
    assert p.one_time_cost == D("1000.002")
    assert p.payback_months == (D("1000.002") / D(484)).quantize(D("0.000001"))
    assert p.price_per_hour == D("0.2") and p.requests_per_day == 8_640_000


def test_an_entered_month_and_an_imported_csv_make_the_review(client, user, box):
    poc_request = approved(user, box, engineering_hours=D(10), maintenance_hours_per_month=D(1))
    assert predicted_requests_per_month(8_640_000) == D(262_800_000)  # 8,640,000 × 730 / 24
    client.force_login(user)
    url = reverse("planner:request-review", args=[poc_request.pk])
    # Month 1 as predicted: the current model would have cost 730, the bill is 146: 484 saved.
    response = client.post(url, {"month": "2025-01", "requests": "262800000", "serving_cost": "146"})
    assert response.status_code == 302
    # Month 2 at half the traffic: the current model would have cost 365: 365 − 146 − 100 = 119 saved.
    client.post(url, {"month": "2025-02", "requests": "131400000", "serving_cost": "146.00"})
    review = reviews.review_for(poc_request=PocRequest.objects.get(pk=poc_request.pk))
    assert [m.actual_savings for m in review.months] == [D(484), D(119)]
    assert review.actual_savings == D(603) and review.predicted_savings == D(968)
    assert review.cash_flow == D("-397.002")  # −1,000.002 + 603
    assert review.gap_pct == (D(603) - D(968)) / D(968) * 100  # −37.7%
    assert review.payback_month is None
    assert review.months_to_go == D("397.002") / (D(603) / 2)  # 1.3 months at 301.5 a month
    assert review.shortfall  # 603 < 0.8 × 968 = 774.4
    assert SwitchPrediction.objects.get(request=poc_request).shortfall_at is not None
    page = client.get(url).content.decode()
    assert "−37.7%" in page and 'id="review-shortfall"' in page and 'id="review-data"' in page
    assert "<script>" not in page  # the chart's data is JSON, plotted by review.js (CSP)
    # A CSV: month 3 as predicted (484: the cash flow reaches +86.998, paid back in 2025-03), month 4 at the
    # predicted traffic with a bill of 46 (584 saved): 1,671 against 1,936 is over 80%: the flag clears.
    csv = b"month,requests,serving_cost\n2025-03,262800000,146.00\n2025-04,262800000,46\n"
    response = client.post(url, {"file": SimpleUploadedFile("bills.csv", csv)})
    assert response.status_code == 302
    review = reviews.review_for(poc_request=PocRequest.objects.get(pk=poc_request.pk))
    assert review.payback_month == date(2025, 3, 1)
    assert review.actual_savings == D(1671) and review.predicted_savings == D(1936)
    assert not review.shortfall
    assert SwitchPrediction.objects.get(request=poc_request).shortfall_at is None
    assert 'id="review-shortfall"' not in client.get(url).content.decode()


def test_a_csv_with_bad_rows_is_refused_line_by_line_and_nothing_is_saved(client, user, box):
    poc_request = approved(user, box)
    client.force_login(user)
    csv = (
        b"month,requests,serving_cost\n"
        b"2025-05,100,10\n"
        b"2025-13,100,10\n"
        b"2025-06,abc,10\n"
        b"2025-07,100,-5\n"
        b"2025-05,200,20\n"
    )
    response = client.post(
        reverse("planner:request-review", args=[poc_request.pk]), {"file": SimpleUploadedFile("b.csv", csv)}
    )
    assert response.status_code == 400
    errors = [str(e) for e in response.context["file_errors"]]
    assert errors == [
        "line 3: month must look like 2025-03, got '2025-13'",
        "line 4: requests must be a whole number ≥ 0, got 'abc'",
        "line 5: serving_cost must be an amount ≥ 0",
        "line 6: 2025-05 is already on line 2",
    ]
    assert not MonthlyActual.objects.exists()
    with pytest.raises(
        ActualsFileError, match="needs the columns month, requests, serving_cost; found: m, r"
    ):
        parse_actuals(b"m,r\n1,2\n")
    future = (timezone.localdate().replace(day=1) + timedelta(days=40)).strftime("%Y-%m")
    with pytest.raises(ActualsFileError, match=f"line 2: {future} has not begun yet"):
        parse_actuals(f"month,requests,serving_cost\n{future},1,1\n".encode())


def test_actuals_through_the_api(client, user, box):
    poc_request = approved(user, box, engineering_hours=D(10), maintenance_hours_per_month=D(1))
    client.force_login(user)
    url = reverse("api:request-actuals", args=[poc_request.pk])
    body = {"months": [{"month": "2025-01", "requests": 262_800_000, "serving_cost": "146.00"}]}
    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert D(data["actual_savings"]) == D(484) and data["months"][0]["month"] == "2025-01-01"
    bad = {"months": [{"month": "March", "requests": 1, "serving_cost": "1"}]}
    response = client.post(url, bad, content_type="application/json")
    assert response.status_code == 400 and "months.0" in response.json()["error"]["fields"]
    csv = SimpleUploadedFile("b.csv", b"month,requests,serving_cost\n2025-02,x,1\n")
    response = client.post(url, {"file": csv})
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["file"] == [
        "line 2: requests must be a whole number ≥ 0, got 'x'"
    ]
    assert MonthlyActual.objects.count() == 1
    assert D(client.get(url).json()["predicted_savings"]) == D(484)


def test_only_the_team_sees_the_review_and_only_managers_enter_actuals(client, user, box, django_user_model):
    poc_request = approved(user, box)
    page = reverse("planner:request-review", args=[poc_request.pk])
    api = reverse("api:request-actuals", args=[poc_request.pk])
    month = {"month": "2025-01", "requests": "1", "serving_cost": "1"}
    other = join_team(
        django_user_model.objects.create_user("bob", password="pw"), "Beta", "requester", "manager"
    )
    client.force_login(other)
    assert client.get(page).status_code == 404
    assert client.post(page, month).status_code == 404
    assert client.get(api).status_code == 404
    requester = join_team(django_user_model.objects.create_user("rita", password="pw"), "Alpha", "requester")
    client.force_login(requester)
    assert client.get(page).status_code == 200
    assert client.post(page, month).status_code == 403
    assert client.post(api, {"months": [month]}, content_type="application/json").status_code == 403
    assert not MonthlyActual.objects.exists()


def test_nightly_job_finds_a_recommendation_that_a_price_change_flipped(client, user, box, sent):
    # 40 h × 100 = 4,000 up front. At 0.2/h the switch saves 4 × 0.2 × 730 = 584 a month (7,008 a year):
    # switch. At 0.1/h it saves 292 (3,504 a year, under 4,000): keep the current model.
    poc_request = approved(user, box)
    assert poc_request.summary.outcome == roi.SWITCH
    box.price_per_hour = D("0.1")
    services.hardware_profile_save(hardware=box)
    assert reviews.nightly_review() == {"changed": 1, "reruns": 0}
    change = RecommendationChange.objects.get(request=poc_request)
    assert (change.previous_outcome, change.new_outcome) == (roi.SWITCH, roi.KEEP)
    assert change.previous_candidate == "quantize.dynamic-int8" and change.new_candidate == "baseline"
    assert (change.previous_price, change.new_price) == (D("0.2"), D("0.1"))
    assert reviews.nightly_review()["changed"] == 0  # the same state again: no new change
    client.force_login(user)
    with override("en"):
        page = client.get(reverse("planner:portfolio")).content.decode()
    assert f'id="changed-{poc_request.pk}"' in page
    assert (
        "the CPU box price fell 50%: keeping the current model is now the cheapest "
        "(was: quantize.dynamic-int8)" in page
    )
    assert "since it was decided" in page
    # Back to 0.2/h: int8 again, with its payback (4,000.002 / 584 = 6.8 months).
    box.price_per_hour = D("0.2")
    services.hardware_profile_save(hardware=box)
    reviews.nightly_review()
    with override("en"):
        page = client.get(reverse("planner:portfolio")).content.decode()
    assert "the CPU box price rose 100%: quantize.dynamic-int8 now pays back in 6.8 months" in page


def test_portfolio_shows_realised_savings_and_the_reviews_due(client, user, box):
    poc_request = approved(user, box, engineering_hours=D(10), maintenance_hours_per_month=D(1))
    SwitchPrediction.objects.filter(request=poc_request).update(
        approved_at=timezone.now() - timedelta(days=70)
    )
    client.force_login(user)
    with override("en"):
        page = client.get(reverse("planner:portfolio")).content.decode()
    assert f'id="due-{poc_request.pk}"' in page and "no month entered yet" in page
    reviews.actuals_save(
        poc_request=poc_request,
        user=user,
        rows=parse_actuals(b"month,requests,serving_cost\n2025-01,131400000,146\n"),
    )
    with override("en"):
        page = client.get(reverse("planner:portfolio")).content.decode()
    assert 'id="realised-USD"' in page and "$119.00" in page and "$484.00" in page  # actual, predicted
    assert f'id="flagged-{poc_request.pk}"' in page


def _local_model(tiny_model_dir):
    name = f"tiny-bert-{uuid.uuid4().hex[:8]}"
    shutil.copytree(tiny_model_dir, settings.MODELS_ROOT / name)
    return name


def test_a_changed_model_directory_or_the_schedule_re_runs_the_poc(
    client, user, cpu_hardware, tiny_model_dir, sent
):
    name = _local_model(tiny_model_dir)
    old = services.poc_request_create(
        owner=user,
        title="Tickets",
        model_ref=name,
        dataset_ref="demo",
        p95_target_ms=D(30),
        requests_per_day=8_640_000,
        hardware=cpu_hardware,
        pipelines=[INT8],
        rerun_schedule=PocRequest.RerunSchedule.QUARTERLY,
    )
    assert len(old.model_fingerprint) == 64  # stored at filing
    for candidate, (accuracy, latency) in zip(old.candidates.all(), MODELS, strict=True):
        record(candidate, accuracy=accuracy, latency=latency)
    poc_request_finish(request_id=old.pk)
    services.poc_request_summary_refresh(request_id=old.pk)
    assert reviews.nightly_review()["reruns"] == 0  # unchanged, and not due before 91 days
    (settings.MODELS_ROOT / name / "added_tokens.json").write_text("{}")
    assert reviews.nightly_review()["reruns"] == 1
    rerun = PocRequest.objects.get(rerun_of=old)
    assert rerun.model_ref == name and rerun.status == PocRequest.Status.QUEUED
    assert [c.pipeline for c in rerun.candidates.all()] == [c.pipeline for c in old.candidates.all()]
    assert rerun.rerun_schedule == PocRequest.RerunSchedule.QUARTERLY
    assert rerun.model_fingerprint != old.model_fingerprint
    assert PocRequest.objects.filter(pk=old.pk).exists()  # kept beside it
    assert reviews.nightly_review()["reruns"] == 0  # the chain is watched at its end, which is running
    client.force_login(user)
    page = client.get(reverse("planner:request-review", args=[old.pk])).content.decode()
    assert f'id="run-{old.pk}"' in page and f'id="run-{rerun.pk}"' in page
    summary = PocRequest.objects.get(pk=old.pk).summary
    shown = summary.candidate_label if summary.outcome == roi.SWITCH else str(summary.get_outcome_display())
    assert shown in page  # the first run's recommendation; the re-run has none yet
    # The schedule: the re-run finished 92 days ago is due again.
    for candidate, (accuracy, latency) in zip(rerun.candidates.all(), MODELS, strict=True):
        record(candidate, accuracy=accuracy, latency=latency)
    poc_request_finish(request_id=rerun.pk)
    PocRequest.objects.filter(pk=rerun.pk).update(finished_at=timezone.now() - timedelta(days=92))
    due = reviews.reruns_due()
    assert [r.pk for r in due.scheduled] == [rerun.pk] and due.model_changed == []
