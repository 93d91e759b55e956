"""Runs a PoC in this process, without the queue or the database, and prints the figures as a table.

python manage.py poc_benchmark                      # demo teacher: baseline vs dynamic int8
python manage.py poc_benchmark --pipeline '[{"technique": "quantize.dynamic-int8"}]' --batch-sizes 1
"""

import json
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from plugins import registry
from plugins.base import ParamError

DEFAULT_PIPELINES = [[{"technique": "quantize.dynamic-int8"}]]


class Command(BaseCommand):
    help = "Measure the baseline and candidate pipelines in one process and print speedup, size and accuracy."

    def add_arguments(self, parser):
        parser.add_argument("--model", default="demo", help="'demo' or a model directory (safetensors).")
        parser.add_argument("--data", default="demo", help="'demo' or a CSV/JSONL file with text and label.")
        parser.add_argument(
            "--pipeline", action="append", default=None, help="A JSON list of steps; repeatable."
        )
        parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        parser.add_argument("--batch-sizes", default=",".join(str(b) for b in settings.MEASURE_BATCH_SIZES))
        parser.add_argument("--threads", type=int, default=settings.MEASURE_THREADS)
        parser.add_argument("--min-iterations", type=int, default=settings.MEASURE_MIN_ITERATIONS)
        parser.add_argument("--json", dest="json_out", help="Also write every figure to this JSON file.")

    def handle(self, *args, **opts):
        from workers.measure import MeasureConfig
        from workers.runner import CandidateSpec, PocError, PocSpec, run_poc

        try:
            raw = [json.loads(p) for p in opts["pipeline"]] if opts["pipeline"] else DEFAULT_PIPELINES
            pipelines = [
                registry.validate_pipeline(p, device=opts["device"], task="sequence-classification")
                for p in raw
            ]
        except (json.JSONDecodeError, ParamError) as exc:
            raise CommandError(f"--pipeline: {exc}") from None
        model_dir = settings.DEMO_MODEL_DIR if opts["model"] == "demo" else Path(opts["model"])
        candidates = [CandidateSpec("0", [])] + [CandidateSpec(str(i), p) for i, p in enumerate(pipelines, 1)]
        config = MeasureConfig(
            batch_sizes=tuple(int(b) for b in opts["batch_sizes"].split(",")),
            min_iterations=opts["min_iterations"],
            threads=opts["threads"],
        )
        with tempfile.TemporaryDirectory(prefix="poc-benchmark-") as artifacts:
            spec = PocSpec(
                task="sequence-classification",
                model_dir=str(model_dir),
                dataset=opts["data"],
                device=opts["device"],
                candidates=candidates,
                artifacts_dir=artifacts,
                measure=config,
            )
            try:
                results = list(run_poc(spec, lambda f, m: self.stderr.write(f"[{f:4.0%}] {m}")))
            except PocError as exc:
                raise CommandError(str(exc)) from None
        self._print(results, candidates, config.batch_sizes)
        if opts["json_out"]:
            Path(opts["json_out"]).write_text(
                json.dumps([r.__dict__ for r in results], indent=2, default=str)
            )

    def _print(self, results, candidates, batch_sizes):
        labels = {c.key: registry.pipeline_label(c.pipeline) for c in candidates}
        base = results[0].figures
        env = results[0].environment
        self.stdout.write(
            f"\n{env['device_name']} · {env['threads']} threads · torch {env['torch']} · "
            f"{env['eval_examples']} held-out examples\n"
        )
        header = f"{'candidate':<60} {'accuracy':>9} {'acc/base':>8} {'p50 b1':>9} {'p95 b1':>9} {'p95 speedup':>11} {'size MB':>8} {'smaller':>8}"
        self.stdout.write(header)
        for result in results:
            if not result.ok:
                self.stdout.write(f"{labels[result.key]:<60} failed: {result.error}")
                continue
            fig = result.figures
            b1 = next(p for p in fig["latency"] if p["batch_size"] == batch_sizes[0])
            base_b1 = next(p for p in base["latency"] if p["batch_size"] == batch_sizes[0])
            self.stdout.write(
                f"{labels[result.key]:<60} {fig['accuracy']:>9.4f} {fig['accuracy'] / base['accuracy']:>8.3f} "
                f"{b1['p50_ms']:>7.2f}ms {b1['p95_ms']:>7.2f}ms {base_b1['p95_ms'] / b1['p95_ms']:>10.2f}x "
                f"{fig['size_bytes'] / 1e6:>8.2f} {base['size_bytes'] / fig['size_bytes']:>7.2f}x"
            )
