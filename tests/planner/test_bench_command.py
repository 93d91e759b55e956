"""The dashboard benchmark command runs, labels its fixtures, and deletes them afterwards."""

import io

from django.core.management import call_command

from planner.models import Candidate, PocRequest


def test_bench_dashboards_times_both_pages_and_cleans_up(db, user, cpu_hardware):
    out = io.StringIO()
    call_command("bench_dashboards", requests=4, candidates=3, iterations=2, stdout=out)
    text = out.getvalue()
    assert "4 requests × 3 candidates" in text
    for page in ("portfolio ", "dashboard ", "dashboard (what-if)", "portfolio CSV"):
        line = next(line for line in text.splitlines() if line.startswith(page))
        assert "p50" in line and "p95" in line and "queries" in line
    assert not PocRequest.objects.exists() and not Candidate.objects.exists()
    assert not type(user).objects.filter(username="bench-dashboards").exists()


def test_kept_fixtures_are_marked_as_synthetic(db, cpu_hardware, client, django_user_model):
    call_command("bench_dashboards", requests=2, candidates=2, iterations=1, keep=True, stdout=io.StringIO())
    requests = list(PocRequest.objects.all())
    assert len(requests) == 2 and all(r.title.startswith("[bench]") for r in requests)
    candidate = Candidate.objects.first()
    assert candidate.environment["synthetic"] is True
    client.force_login(django_user_model.objects.get(username="bench-dashboards"))
    page = client.get(f"/requests/{candidate.request_id}/candidates/{candidate.pk}/").content.decode()
    assert "not a measurement" in page
    call_command("bench_dashboards", requests=1, candidates=1, iterations=1, stdout=io.StringIO())
    assert not PocRequest.objects.exists()  # a later run deletes what an earlier one kept
