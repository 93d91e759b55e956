"""Time the portfolio page and a request dashboard on a large synthetic portfolio.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench python manage.py bench_dashboards

Creates REQUESTS requests × CANDIDATES candidates with synthetic figures (benchmark fixtures, never
measurements: titles start with "[bench]", model "bench-fixture", environment {"synthetic": true}),
computes their portfolio summaries, renders both pages ITERATIONS times through the Django test client as
a logged-in staff user, prints p50/p95 milliseconds and the query count of each page, and deletes every
row it made (unless --keep). Run it against a scratch database: it writes to the configured one.
"""

from __future__ import annotations

import random
import statistics
import time
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from planner import services
from planner.models import Candidate, HardwareProfile, PocRequest, PocRequestSummary
from workers.record import LatencyPoint, Measurement

TITLE_PREFIX = "[bench]"
MODEL_REF = "bench-fixture"
USERNAME = "bench-dashboards"
PIPELINES = [
    [],
    [{"technique": "quantize.dynamic-int8", "params": {"per_channel": True}}],
    [{"technique": "prune.layers"}, {"technique": "quantize.dynamic-int8"}],
    [{"technique": "distill.kd"}],
    [{"technique": "distill.kd"}, {"technique": "quantize.dynamic-int8"}],
    [{"technique": "prune.ffn"}],
    [{"technique": "prune.vocabulary"}, {"technique": "quantize.dynamic-int8"}],
    [{"technique": "quantize.half"}],
    [{"technique": "distill.kd"}, {"technique": "prune.ffn"}, {"technique": "quantize.dynamic-int8"}],
    [{"technique": "prune.layers"}],
]


def _sweep(rng: random.Random, p95_batch1: float) -> tuple[LatencyPoint, ...]:
    points = []
    for b in (1, 2, 4, 8, 16, 32):
        p95 = p95_batch1 * b ** rng.uniform(0.45, 0.8)
        p50 = p95 * 0.8
        points.append(
            LatencyPoint(
                batch_size=b,
                p50_ms=round(p50, 3),
                p95_ms=round(p95, 3),
                p99_ms=round(p95 * 1.1, 3),
                mean_ms=round(p50 * 1.05, 3),
                throughput_rps=round(b * 1000 / p50, 3),
                iterations=100,
                mean_tokens=24.0,
            )
        )
    return tuple(points)


class Command(BaseCommand):
    help = "Benchmark the portfolio page and a request dashboard on synthetic fixtures (then delete them)."

    def add_arguments(self, parser):
        parser.add_argument("--requests", type=int, default=1000)
        parser.add_argument("--candidates", type=int, default=10, help="Per request, the baseline included.")
        parser.add_argument("--iterations", type=int, default=50)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--keep", action="store_true", help="Leave the fixtures in the database.")

    def handle(self, *args, **opts):
        if opts["candidates"] < 1 or opts["requests"] < 1 or opts["iterations"] < 1:
            raise CommandError("--requests, --candidates and --iterations must be at least 1.")
        hardware = HardwareProfile.objects.order_by("pk").first()
        if hardware is None:
            raise CommandError("No hardware profile: run `python manage.py migrate` first.")
        self._cleanup()  # leftovers of an interrupted run
        user = get_user_model().objects.create_user(USERNAME, is_staff=True)
        try:
            started = time.perf_counter()
            ids = self._create(user, hardware, opts["requests"], opts["candidates"], opts["seed"])
            created = time.perf_counter() - started
            started = time.perf_counter()
            services.poc_request_summaries_refresh(request_ids=ids)
            summarised = time.perf_counter() - started
            self._analyze()
            self.stdout.write(
                f"{connection.vendor}: {len(ids)} requests × {opts['candidates']} candidates created in "
                f"{created:.1f} s; summaries in {summarised:.1f} s"
            )
            # A host the settings accept (the test client's default, "testserver", usually is not).
            host = next(
                (h for h in settings.ALLOWED_HOSTS if h not in ("*", "") and h[0] != "."), "localhost"
            )
            client = Client(HTTP_HOST=host)
            client.force_login(user)
            pages = {
                "portfolio": reverse("planner:portfolio"),
                "portfolio (filtered)": reverse("planner:portfolio") + "?status=succeeded&outcome=switch",
                "dashboard": reverse("planner:request-detail", args=[ids[len(ids) // 2]]),
                "dashboard (what-if)": reverse("planner:request-detail", args=[ids[len(ids) // 2]])
                + "?requests_per_day=50000000&horizon_months=24",
                "portfolio CSV": reverse("planner:portfolio-csv"),
            }
            for name, url in pages.items():
                self._time(client, name, url, opts["iterations"])
        finally:
            if opts["keep"]:
                self.stdout.write("Fixtures kept (--keep); run again without it to delete them.")
            else:
                self._cleanup()

    def _create(self, user, hardware, n_requests: int, n_candidates: int, seed: int) -> list[int]:
        rng = random.Random(seed)
        now = timezone.now()
        team = services.team_for_user(user=user)
        with transaction.atomic():
            requests = PocRequest.objects.bulk_create(
                [
                    PocRequest(
                        owner=user,
                        team=team,
                        title=f"{TITLE_PREFIX} synthetic request {i + 1}",
                        model_ref=MODEL_REF,
                        dataset_ref="demo",
                        p95_target_ms=Decimal(rng.choice([20, 30, 50, 100])),
                        accuracy_floor_pct=Decimal(rng.choice([95, 97, 99])),
                        requests_per_day=rng.choice([100_000, 2_000_000, 20_000_000, 200_000_000]),
                        hardware=hardware,
                        currency=hardware.currency,
                        status=PocRequest.Status.SUCCEEDED,
                        progress=1.0,
                        progress_message="synthetic benchmark fixture",
                        started_at=now,
                        finished_at=now,
                    )
                    for i in range(n_requests)
                ],
                batch_size=500,
            )
            candidates = []
            for poc_request in requests:
                base_accuracy = rng.uniform(0.85, 0.95)
                base_p95 = rng.uniform(10, 80)
                for position in range(n_candidates):
                    baseline = position == 0
                    candidate = Candidate(
                        request=poc_request,
                        position=position,
                        pipeline=PIPELINES[position % len(PIPELINES)] if not baseline else [],
                        status=Candidate.Status.MEASURED,
                        environment={"synthetic": True, "note": "benchmark fixture, not a measurement"},
                        measured_at=now,
                    )
                    candidate.set_measurement(
                        Measurement(
                            accuracy=base_accuracy if baseline else base_accuracy - rng.uniform(0, 0.05),
                            macro_f1=base_accuracy - 0.02,
                            latency=_sweep(rng, base_p95 if baseline else base_p95 * rng.uniform(0.3, 1.1)),
                            size_bytes=rng.randint(20, 400) * 1_000_000,
                            parameters=22_000_000,
                            nonzero_parameters=20_000_000,
                            peak_memory_bytes=500_000_000,
                            produce_seconds=0.0 if baseline else rng.uniform(10, 3600),
                            device_hours=0.0 if baseline else rng.uniform(0.01, 2),
                        )
                    )
                    candidates.append(candidate)
            Candidate.objects.bulk_create(candidates, batch_size=2000)
        return [r.pk for r in requests]

    def _analyze(self) -> None:
        """Refresh PostgreSQL's statistics, as autovacuum would soon after: right after a bulk insert the
        planner still believes the tables are empty and picks nested loops that cost 50 ms a query."""
        if connection.vendor != "postgresql":
            return
        tables = [m._meta.db_table for m in (PocRequest, Candidate, PocRequestSummary)]
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE " + ", ".join(connection.ops.quote_name(t) for t in tables))

    def _time(self, client: Client, name: str, url: str, iterations: int) -> None:
        client.get(url)  # warm: templates compiled, connections open
        timings = []
        for _ in range(iterations):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                if isinstance(response, StreamingHttpResponse):
                    body = b"".join(response.streaming_content)
                else:
                    body = response.content
                timings.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise CommandError(f"{url} answered {response.status_code}")
        timings.sort()
        p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
        self.stdout.write(
            f"{name:<22} p50 {statistics.median(timings):7.1f} ms   p95 {p95:7.1f} ms   "
            f"{len(queries)} queries   {len(body) // 1024} KiB   ({iterations} runs, {url})"
        )

    def _cleanup(self) -> None:
        users = get_user_model().objects.filter(username=USERNAME)
        # Candidates and summaries go with their requests (CASCADE); requests first (owner is PROTECT).
        PocRequest.objects.filter(
            owner__in=users, title__startswith=TITLE_PREFIX, model_ref=MODEL_REF
        ).delete()
        users.delete()
