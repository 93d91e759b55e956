"""Runs a PoC in this process, without the queue or the database, and prints the figures as a table.

python manage.py poc_benchmark                      # demo teacher: baseline vs dynamic int8
python manage.py poc_benchmark --pipeline '[{"technique": "quantize.dynamic-int8"}]' --batch-sizes 1
python manage.py poc_benchmark --task causal-lm     # demo LLM (SmolLM2-135M): baseline vs the LM defaults
python manage.py poc_benchmark --repeat 3           # three whole runs: each speedup and their spread
python manage.py poc_benchmark --busy 2 --compare-quiet   # quiet, then with 2 busy processes, side by side
python manage.py poc_benchmark --target-ms 50 --peak-rps 40   # also goodput under a 50 ms p95 target

Every candidate is timed against the baseline in interleaved rounds (docs/measurement.md); the speedup,
the p95 and their intervals are printed with the verdict (clean, or unstable and why).
"""

import json
import math
import multiprocessing
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from plugins import registry
from plugins.base import ParamError

CLASSIFICATION, CAUSAL_LM = "sequence-classification", "causal-lm"
DEFAULT_PIPELINES = {
    CLASSIFICATION: [[{"technique": "quantize.dynamic-int8"}]],
    CAUSAL_LM: [
        [{"technique": "quantize.weight-only", "params": {"bits": 8}}],
        [{"technique": "quantize.dynamic-int8"}],
        [{"technique": "quantize.half", "params": {"dtype": "bf16"}}],
    ],
}
DASH = "—"


def _spin() -> None:
    """A busy process: one core's worth of pure-Python work, until it is terminated."""
    n = 0
    while True:
        n += 1


@contextmanager
def busy_processes(count: int):
    """``count`` processes that each keep one core busy for the duration of the block; always ended."""
    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    )
    processes = [context.Process(target=_spin, daemon=True, name=f"busy-{i}") for i in range(count)]
    try:
        for process in processes:
            process.start()
        yield processes
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)


def speedup_text(point) -> str:
    """'1.46× (1.41–1.52)'; a dash where there is no speedup (the baseline, or too few rounds)."""
    if point is None or point.speedup is None:
        return DASH
    return f"{point.speedup:.2f}× ({point.speedup_low:.2f}–{point.speedup_high:.2f})"


def p95_text(point) -> str:
    """'0.91 ms (0.88–0.95, n=500)', or 'too few samples (n=50)' when the p95 was not reported."""
    if point is None:
        return DASH
    if point.p95_ms is None:
        return f"too few samples (n={point.iterations})"
    if point.p95_low_ms is None:
        return f"{point.p95_ms:.2f} ms (n={point.iterations})"
    return f"{point.p95_ms:.2f} ms ({point.p95_low_ms:.2f}–{point.p95_high_ms:.2f}, n={point.iterations})"


def status_text(point) -> str:
    if point is None or point.rounds is None:
        return DASH
    return f"unstable: {point.unstable}" if point.unstable else "clean"


def _static_capacity(latency, target_ms: float, tokens: int) -> float:
    """Requests/s of full batches back to back at the best batch whose p95 meets the target (0: none);
    text generation: the p95 time to first token against the target, replies of ``tokens`` tokens."""
    rates = []
    for p in latency:
        if p.ttft_p50_ms is not None and p.itl_p50_ms is not None:
            if p.ttft_p95_ms is not None and p.ttft_p95_ms <= target_ms:
                rates.append(p.batch_size * 1000 / (p.ttft_p50_ms + (tokens - 1) * p.itl_p50_ms))
        elif p.p95_ms is not None and p.p95_ms <= target_ms:
            rates.append(p.throughput_rps)
    return max(rates, default=0.0)


def spread(values) -> float | None:
    """(max − min) / median of a run's repeated figures; None with fewer than two."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    return (max(values) - min(values)) / statistics.median(values)


class Command(BaseCommand):
    help = (
        "Measure the baseline and candidate pipelines in one process and print speedup (with its interval), "
        "p95, stability, size and accuracy (perplexity, time to first token, tokens/s and cost per 1M output "
        "tokens for causal LMs); --repeat and --busy show how the figures hold up."
    )

    def add_arguments(self, parser):
        parser.add_argument("--task", default=CLASSIFICATION, choices=[CLASSIFICATION, CAUSAL_LM])
        parser.add_argument(
            "--model", default="demo", help="'demo' or a model directory (safetensors) for the task."
        )
        parser.add_argument(
            "--data",
            default="demo",
            help="'demo' or a file: CSV/JSONL with text and label (classification); TXT/JSONL/CSV texts (LM).",
        )
        parser.add_argument(
            "--pipeline", action="append", default=None, help="A JSON list of steps; repeatable."
        )
        parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        parser.add_argument("--batch-sizes", default=",".join(str(b) for b in settings.MEASURE_BATCH_SIZES))
        parser.add_argument("--threads", type=int, default=settings.MEASURE_THREADS)
        parser.add_argument(
            "--min-iterations",
            type=int,
            default=settings.MEASURE_MIN_ITERATIONS,
            help="Timed iterations of each model per batch size before the run may stop (p95: 100).",
        )
        parser.add_argument("--new-tokens", type=int, default=settings.MEASURE_NEW_TOKENS)
        parser.add_argument("--max-prompt-tokens", type=int, default=settings.MEASURE_MAX_PROMPT_TOKENS)
        parser.add_argument(
            "--generation-iterations", type=int, default=settings.MEASURE_GENERATION_ITERATIONS
        )
        parser.add_argument(
            "--lm-eval-texts",
            type=int,
            default=settings.MEASURE_LM_EVAL_TEXTS,
            help="Held-out texts for perplexity (0 = all).",
        )
        parser.add_argument(
            "--repeat", type=int, default=1, help="Run the whole measurement this many times (default 1)."
        )
        parser.add_argument(
            "--busy",
            type=int,
            default=0,
            help="Start this many busy-loop processes for the duration of the measurement.",
        )
        parser.add_argument(
            "--compare-quiet",
            action="store_true",
            help="With --busy: measure on a quiet host first, then busy, and print both side by side.",
        )
        parser.add_argument(
            "--price-per-hour",
            type=Decimal,
            default=Decimal("0.096"),
            help="Hourly price of the device, for the cost per 1M output tokens (default: the 2 vCPU profile).",
        )
        parser.add_argument("--utilisation", type=Decimal, default=Decimal("0.7"))
        parser.add_argument(
            "--target-ms",
            type=float,
            default=None,
            help="Latency target (text generation: time to first token) for the serving scenario; with it, "
            "each model's goodput is measured and printed against the static figure.",
        )
        parser.add_argument("--itl-target-ms", type=float, default=None, help="Text generation: inter-token.")
        parser.add_argument("--reply-tokens", type=int, default=64, help="Text generation: reply length M.")
        parser.add_argument(
            "--peak-rps", type=float, default=40.0, help="Peak traffic for the replicas before/after goodput."
        )
        parser.add_argument(
            "--requests-per-day",
            type=Decimal,
            default=Decimal("20000000"),
            help="Traffic for the recommendation printed per run (with --target-ms as the p95 target, "
            "default 50 ms; text generation: TTFT 500 ms and --itl-target-ms or 100 ms per token; a 97%% "
            "accuracy floor and 40 engineering hours at 100/h).",
        )
        parser.add_argument("--json", dest="json_out", help="Also write every figure to this JSON file.")

    def handle(self, *args, **opts):
        from workers.execution import measure_config_from_settings

        task = opts["task"]
        if opts["repeat"] < 1 or opts["busy"] < 0:
            raise CommandError("--repeat is at least 1 and --busy at least 0")
        if opts["compare_quiet"] and not opts["busy"]:
            raise CommandError("--compare-quiet compares with --busy K processes; give --busy")
        try:
            raw = [json.loads(p) for p in opts["pipeline"]] if opts["pipeline"] else DEFAULT_PIPELINES[task]
            pipelines = [registry.validate_pipeline(p, device=opts["device"], task=task) for p in raw]
        except (json.JSONDecodeError, ParamError) as exc:
            raise CommandError(f"--pipeline: {exc}") from None
        model_dir = self._model_dir(opts["model"], task)
        from workers.runner import CandidateSpec

        candidates = [CandidateSpec("0", [])] + [CandidateSpec(str(i), p) for i, p in enumerate(pipelines, 1)]
        defaults = measure_config_from_settings()
        config = replace(
            defaults,
            batch_sizes=tuple(int(b) for b in opts["batch_sizes"].split(",")),
            timing=replace(defaults.timing, min_samples=opts["min_iterations"]),
            threads=opts["threads"],
            new_tokens=opts["new_tokens"],
            max_prompt_tokens=opts["max_prompt_tokens"],
            generation_min_iterations=opts["generation_iterations"],
            lm_eval_texts=opts["lm_eval_texts"],
        )
        scenarios = [("quiet", 0)] * (opts["compare_quiet"] or not opts["busy"])
        scenarios += [(f"busy ({opts['busy']} processes)", opts["busy"])] * bool(opts["busy"])
        runs = {}
        for name, busy in scenarios:
            for run in range(1, opts["repeat"] + 1):
                self.stderr.write(f"== {name}, run {run} of {opts['repeat']}")
                with busy_processes(busy):
                    runs[(name, run)] = self._run(task, model_dir, candidates, config, opts)
        first = runs[(scenarios[0][0], 1)]
        if task == CAUSAL_LM:
            self._print_lm(first, candidates, config.batch_sizes, opts)
        else:
            self._print(first, candidates, config.batch_sizes)
        for key, results in runs.items():
            self._print_trust(key, results, candidates, config.batch_sizes)
        self._print_runs(runs, candidates, config.batch_sizes[0], [name for name, _ in scenarios])
        if opts["target_ms"] is not None:
            for key, results in runs.items():
                self._print_goodput(key, results, candidates, opts)
        if opts["json_out"]:
            rows = [
                {
                    "scenario": name,
                    "run": run,
                    **r.__dict__,
                    "measurement": r.measurement and r.measurement.to_json(),
                }
                for (name, run), results in runs.items()
                for r in results
            ]
            Path(opts["json_out"]).write_text(json.dumps(rows, indent=2, default=str))
        self.stdout.write("")
        for key, results in runs.items():
            self._print_recommendation(key, results, candidates, task, opts)

    def _run(self, task, model_dir, candidates, config, opts):
        from workers.runner import PocError, PocSpec, run_poc
        from workers.serving import Targets

        targets = None
        if opts["target_ms"] is not None:
            generative = task == CAUSAL_LM
            targets = Targets(
                first_ms=opts["target_ms"],
                itl_ms=opts["itl_target_ms"] if generative else None,
                tokens=opts["reply_tokens"] if generative else 1,
            )

        with tempfile.TemporaryDirectory(prefix="poc-benchmark-") as artifacts:
            spec = PocSpec(
                task=task,
                model_dir=str(model_dir),
                dataset=opts["data"],
                device=opts["device"],
                candidates=candidates,
                artifacts_dir=artifacts,
                measure=config,
                targets=targets,
            )
            last = {"message": "", "at": 0.0}

            def report(fraction, message):
                # Timing rounds report many times a second; print a message when it changes, at most 1/s.
                now = time.monotonic()
                if message != last["message"] and (now - last["at"] >= 1.0 or "round" not in message):
                    self.stderr.write(f"[{fraction:4.0%}] {message}")
                    last.update(message=message, at=now)

            try:
                return list(run_poc(spec, report))
            except PocError as exc:
                raise CommandError(str(exc)) from None

    def _model_dir(self, model: str, task: str) -> Path:
        if model != "demo":
            return Path(model)
        if task == CLASSIFICATION:
            return settings.DEMO_MODEL_DIR
        from workers.demo import build_demo_llm

        try:
            build_demo_llm(settings.DEMO_LLM_DIR, report=lambda f, m: self.stderr.write(f"demo LLM: {m}"))
        except (FileNotFoundError, ImportError) as exc:
            raise CommandError(str(exc)) from None
        return settings.DEMO_LLM_DIR

    def _header(self, results):
        env = results[0].environment
        scored = f" ({env['perplexity_texts']} scored for perplexity)" if "perplexity_texts" in env else ""
        self.stdout.write(
            f"\n{env['device_name']} · {env['threads']} threads · torch {env['torch']} · "
            f"{env['eval_examples']} held-out examples{scored}\n"
        )

    @staticmethod
    def _ms(value) -> str:
        return f"{value:.2f}ms" if value is not None else DASH

    def _print(self, results, candidates, batch_sizes):
        labels = {c.key: registry.pipeline_label(c.pipeline) for c in candidates}
        base = results[0].measurement
        self._header(results)
        first = batch_sizes[0]
        self.stdout.write(
            f"{'candidate':<60} {'accuracy':>9} {'acc/base':>8} {f'p50 b{first}':>9} {f'p95 b{first}':>9} "
            f"{'speedup':>19} {'size MB':>8} {'smaller':>8}"
        )
        for result in results:
            if not result.ok:
                self.stdout.write(f"{labels[result.key]:<60} failed: {result.error}")
                continue
            fig = result.measurement
            b1 = fig.at(first)
            self.stdout.write(
                f"{labels[result.key]:<60} {fig.accuracy:>9.4f} {fig.accuracy / base.accuracy:>8.3f} "
                f"{self._ms(b1.p50_ms):>9} {self._ms(b1.p95_ms):>9} {speedup_text(b1):>19} "
                f"{fig.size_bytes / 1e6:>8.2f} {base.size_bytes / fig.size_bytes:>7.2f}x"
            )

    def _print_lm(self, results, candidates, batch_sizes, opts):
        """Per candidate: perplexity, TTFT and inter-token latency at the first batch size, tokens/s there and
        the interleaved speedup over the baseline, size, peak memory, and the hardware cost of 1M output
        tokens at the best measured batch size (price ÷ (tokens/s × utilisation × 3600) × 1M; no latency
        target here)."""
        labels = {c.key: registry.pipeline_label(c.pipeline) for c in candidates}
        base = results[0].measurement
        first = batch_sizes[0]
        self._header(results)
        point = base.latency[0]
        self.stdout.write(
            f"prompts up to {opts['max_prompt_tokens']} tokens (mean {point.prompt_tokens:.1f}), "
            f"{point.new_tokens} new tokens per request, price {opts['price_per_hour']}/h at "
            f"{opts['utilisation']} utilisation\n"
        )
        self.stdout.write(
            f"{'candidate':<52} {'ppl':>7} {'ppl/base':>8} {f'TTFT p50 b{first}':>14} {'p95':>9} "
            f"{'ITL p50':>9} {f'tok/s b{first}':>10} {'speedup':>19} {'best tok/s':>10} {'size MB':>8} "
            f"{'smaller':>7} {'peak MB':>8} {'$/1M tok b1':>11} {'$/1M tok best':>13}"
        )
        for result in results:
            if not result.ok:
                self.stdout.write(f"{labels[result.key]:<52} failed: {result.error}")
                continue
            fig = result.measurement
            b1 = fig.at(first)
            best = max(p.tokens_per_s for p in fig.latency)
            self.stdout.write(
                f"{labels[result.key]:<52} {fig.perplexity:>7.3f} {fig.perplexity / base.perplexity:>8.3f} "
                f"{self._ms(b1.ttft_p50_ms):>14} {self._ms(b1.ttft_p95_ms):>9} {self._ms(b1.itl_p50_ms):>9} "
                f"{b1.tokens_per_s:>10.1f} {speedup_text(b1):>19} {best:>10.1f} "
                f"{fig.size_bytes / 1e6:>8.1f} {base.size_bytes / fig.size_bytes:>6.2f}x "
                f"{(fig.peak_memory_bytes or 0) / 1e6:>8.0f} "
                f"{self._cost(b1.tokens_per_s, opts):>11.4f} {self._cost(best, opts):>13.4f}"
            )

    def _print_trust(self, key, results, candidates, batch_sizes):
        """One run: per candidate and batch size, the speedup and the p95 with their intervals, the sample
        count, the verdict, and how long the candidate's timing took."""
        name, run = key
        labels = {c.key: registry.pipeline_label(c.pipeline) for c in candidates}
        self.stdout.write(f"\n{name}, run {run}: interleaved timing against the baseline")
        self.stdout.write(
            f"{'candidate':<44} {'batch':>5} {'speedup':>19} {'p95 (interval, n)':>34} {'timing':>8}  status"
        )
        for result in results:
            if not result.ok:
                self.stdout.write(f"{labels[result.key]:<44} failed: {result.error}")
                continue
            seconds = result.environment.get("latency_timing_seconds")
            for batch_size in batch_sizes:
                point = result.measurement.at(batch_size)
                took = f"{seconds:.1f}s" if seconds is not None and batch_size == batch_sizes[0] else ""
                self.stdout.write(
                    f"{labels[result.key]:<44} {batch_size:>5} {speedup_text(point):>19} "
                    f"{p95_text(point):>34} {took:>8}  {status_text(point)}"
                )

    def _print_runs(self, runs, candidates, batch_size, scenarios):
        """Each run's speedup at the first batch size per candidate, and the spread over the runs of each
        scenario ((max − min) / median), the scenarios side by side."""
        labels = {c.key: registry.pipeline_label(c.pipeline) for c in candidates if c.pipeline}
        self.stdout.write(f"\nspeedup at batch size {batch_size}, run by run; spread = (max − min) / median")
        self.stdout.write(f"{'candidate':<44} " + " | ".join(f"{s:<40}" for s in scenarios))
        for key, label in labels.items():
            cells = []
            for scenario in scenarios:
                speedups = []
                for (name, _run), results in runs.items():
                    result = next((r for r in results if r.key == key), None)
                    if name == scenario and result is not None and result.ok:
                        point = result.measurement.at(batch_size)
                        speedups.append(point.speedup if point is not None else None)
                shown = " ".join(f"{s:.2f}×" if s is not None else DASH for s in speedups)
                width = spread(speedups)
                cells.append(f"{shown}  spread {width:.1%}" if width is not None else shown)
            self.stdout.write(f"{label:<44} " + " | ".join(f"{c:<40}" for c in cells))

    def _print_goodput(self, key, results, candidates, opts):
        """One run: per model, the goodput under the target against the static figure (b ÷ median at the
        largest batch meeting the target, × utilisation, as capacity was computed before goodput), the
        replicas each implies at --peak-rps, the prediction the search started from, and the time the
        search took against the timing's."""
        name, run = key
        labels = {c.key: registry.pipeline_label(c.pipeline) for c in candidates}
        u, peak = float(opts["utilisation"]), opts["peak_rps"]
        self.stdout.write(
            f"\n{name}, run {run}: goodput at {opts['target_ms']:g} ms for {int(100 * 0.95)}% of requests, "
            f"{peak:g} req/s peak; static = b ÷ median × {u:g}"
        )
        self.stdout.write(
            f"{'candidate':<44} {'goodput':>9} {'static':>9} {'ratio':>6} {'predicted':>9} {'setting':>12} "
            f"{'replicas':>13} {'search s':>8} {'timing s':>8} {'added':>6}"
        )
        for result in results:
            goodput = result.ok and result.measurement.goodput
            if not goodput:
                self.stdout.write(f"{labels[result.key]:<44} {'—' if result.ok else result.error}")
                continue
            tokens = opts["reply_tokens"] if goodput.tokens else 1
            static = _static_capacity(result.measurement.latency, opts["target_ms"], tokens) * u
            replicas = (
                f"{math.ceil(peak / static) if static else DASH} → "
                f"{math.ceil(peak / goodput.rps) if goodput.rps else DASH}"
            )
            searched = result.environment.get("goodput_seconds") or 0.0
            timed = result.environment.get("latency_timing_seconds") or 0.0
            predicted = f"{goodput.predicted_rps:.1f}" if goodput.predicted_rps is not None else DASH
            self.stdout.write(
                f"{labels[result.key]:<44} {goodput.rps:>9.1f} {static:>9.1f} "
                f"{(goodput.rps / static if static else 0):>6.2f} {predicted:>9} "
                f"{f'b≤{goodput.max_batch}, {goodput.max_wait_ms:g} ms':>12} {replicas:>13} "
                f"{searched:>8.1f} {timed:>8.1f} {(searched / timed if timed else 0):>6.0%}"
            )

    def _print_recommendation(self, key, results, candidates, task, opts):
        """What the planner would recommend from this run's figures (planner.roi over the measurements, the
        same arithmetic as the dashboard): switch, keep, blocked, or undecided and what to re-run."""
        from planner import roi
        from planner.dashboard.request import roi_measurement

        labels = {c.key: registry.pipeline_label(c.pipeline) or "baseline" for c in candidates}
        models = [
            roi_measurement(r.measurement, key=r.key, name=labels[r.key], is_baseline=r.key == "0")
            for r in results
            if r.ok
        ]
        if not any(m.is_baseline for m in models):
            self.stdout.write(f"{key[0]}, run {key[1]}: no recommendation (the baseline failed)")
            return
        generative = task == CAUSAL_LM
        target = Decimal(str(opts["target_ms"] or (500 if generative else 50)))
        itl = Decimal(str(opts["itl_target_ms"] or 100)) if generative else None
        economics = roi.Economics(
            requests_per_day=opts["requests_per_day"],
            price_per_hour=opts["price_per_hour"],
            p95_target_ms=target,
            accuracy_floor_pct_of_baseline=None if generative else Decimal(97),
            target_utilisation=opts["utilisation"],
            engineering_hours=Decimal(40),
            engineering_rate=Decimal(100),
            task=roi.CAUSAL_LM if generative else roi.CLASSIFICATION,
            per_token_target_ms=itl,
            output_tokens_per_request=opts["reply_tokens"],
        )
        report = roi.evaluate(models, economics)
        rec = report.recommendation
        text = rec.outcome + (f": {rec.name}" if rec.name else "")
        if rec.outcome == roi.UNDECIDED:
            text += f" (pending {', '.join(rec.pending)}; re-run: {rec.rerun})"
        if rec.within_uncertainty:
            text += f" ({rec.within_uncertainty} is cheaper at the measured figures, within the intervals)"
        monthly = report.baseline.monthly_cost
        chosen = report.row(rec.key).monthly_cost if rec.key else None
        costs = f"; monthly {monthly} → {chosen}" if monthly is not None and chosen is not None else ""
        self.stdout.write(f"{key[0]}, run {key[1]}: recommendation {text}{costs}")

    @staticmethod
    def _cost(tokens_per_s: float, opts) -> Decimal:
        capacity = Decimal(str(tokens_per_s)) * opts["utilisation"] * 3600
        return opts["price_per_hour"] / capacity * 1_000_000
