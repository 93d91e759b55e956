"""The nightly re-evaluation through the real queue: celery beat (its schedule in the database, with a
one-second interval instead of nightly) sends the task to the "schedule" queue, a real worker runs it
against the test database, and the portfolio shows the recommendation a price change flipped."""

from __future__ import annotations

import sys
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils.translation import override

from planner import roi, services
from planner.models import HardwareProfile, RecommendationChange
from planner.reviews import services as reviews
from tests.conftest import wait_for
from tests.planner.factories import measured_request, sweep

# Serialized rollback, as every test with a real worker: the data migrations' rows (roles, hardware) are
# restored for it, and its flush does not leave content types behind for the next such test.
pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_beat_and_a_worker_run_the_nightly_review_and_the_portfolio_shows_the_change(
    transactional_db, client, user
):
    import redis
    from django.conf import settings
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from tests.workerprocs import _environment, _start, workers

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    box = HardwareProfile.objects.create(
        name="Beat box", device_kind="cpu", price_per_hour=Decimal("0.1"), currency="USD"
    )
    # At 0.1/h int8 saves 4 × 0.1 × 730 = 292 a month, 3,504 a year: under the 4,000 one-time cost, so keep.
    poc_request = measured_request(
        owner=user, hardware=box, models=[(0.95, sweep(20.0)), (0.95, sweep(10.0))]
    )
    assert poc_request.summary.outcome == roi.KEEP
    reviews.requests_reevaluate()  # what last night saw
    # At 0.2/h it saves 584 a month (7,008 a year): switch, paying back in 4,000.002 / 584 = 6.8 months.
    box.price_per_hour = Decimal("0.2")
    services.hardware_profile_save(hardware=box)
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(
        name="nightly review (test)",
        task="workers.schedule.nightly_review",
        interval=every_second,
        queue="schedule",
    )
    environment = _environment(None, {})
    celery = [sys.executable, "-m", "celery", "-A", "workers.app"]
    with workers() as started:
        worker = [
            *celery,
            "worker",
            "-Q",
            "schedule",
            "--pool",
            "solo",
            "--without-gossip",
            "--without-mingle",
        ]
        started.append(
            _start("schedule-worker", [*worker, "--loglevel", "INFO", "-n", "schedule@%h"], environment)
        )
        beat = [*celery, "beat", "--loglevel", "INFO", "--max-interval", "1", "--pidfile="]
        beat += ["--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
        started.append(_start("beat", beat, environment))
        started[0].wait_ready()
        change = wait_for(
            lambda: RecommendationChange.objects.filter(request=poc_request).first(),
            timeout=90,
            message="the nightly review to run through beat and the worker",
        )
        PeriodicTask.objects.filter(name="nightly review (test)").update(enabled=False)
        assert all(w.alive() for w in started)
    assert "Sending due task nightly review (test)" in started[1].log()
    assert (change.previous_outcome, change.new_outcome) == (roi.KEEP, roi.SWITCH)
    assert RecommendationChange.objects.filter(request=poc_request).count() == 1  # later runs: no change
    client.force_login(user)
    with override("en"):
        page = client.get(reverse("planner:portfolio")).content.decode()
    assert f'id="changed-{poc_request.pk}"' in page
    assert "the Beat box price rose 100%: quantize.dynamic-int8 now pays back in 6.8 months" in page
