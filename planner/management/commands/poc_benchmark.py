"""Runs a PoC in this process, without the queue or the database, and prints the figures as a table.

python manage.py poc_benchmark                      # demo teacher: baseline vs dynamic int8
python manage.py poc_benchmark --pipeline '[{"technique": "quantize.dynamic-int8"}]' --batch-sizes 1
python manage.py poc_benchmark --task causal-lm     # demo LLM (SmolLM2-135M): baseline vs the LM defaults
"""

import json
import tempfile
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


class Command(BaseCommand):
    help = (
        "Measure the baseline and candidate pipelines in one process and print speedup, size and accuracy "
        "(perplexity, time to first token, tokens/s and cost per 1M output tokens for causal LMs)."
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
        parser.add_argument("--min-iterations", type=int, default=settings.MEASURE_MIN_ITERATIONS)
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
            "--price-per-hour",
            type=Decimal,
            default=Decimal("0.096"),
            help="Hourly price of the device, for the cost per 1M output tokens (default: the 2 vCPU profile).",
        )
        parser.add_argument("--utilisation", type=Decimal, default=Decimal("0.7"))
        parser.add_argument("--json", dest="json_out", help="Also write every figure to this JSON file.")

    def handle(self, *args, **opts):
        from workers.measure import MeasureConfig
        from workers.runner import CandidateSpec, PocError, PocSpec, run_poc

        task = opts["task"]
        try:
            raw = [json.loads(p) for p in opts["pipeline"]] if opts["pipeline"] else DEFAULT_PIPELINES[task]
            pipelines = [registry.validate_pipeline(p, device=opts["device"], task=task) for p in raw]
        except (json.JSONDecodeError, ParamError) as exc:
            raise CommandError(f"--pipeline: {exc}") from None
        model_dir = self._model_dir(opts["model"], task)
        candidates = [CandidateSpec("0", [])] + [CandidateSpec(str(i), p) for i, p in enumerate(pipelines, 1)]
        config = MeasureConfig(
            batch_sizes=tuple(int(b) for b in opts["batch_sizes"].split(",")),
            min_iterations=opts["min_iterations"],
            threads=opts["threads"],
            new_tokens=opts["new_tokens"],
            max_prompt_tokens=opts["max_prompt_tokens"],
            generation_min_iterations=opts["generation_iterations"],
            lm_eval_texts=opts["lm_eval_texts"],
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
            )
            try:
                results = list(run_poc(spec, lambda f, m: self.stderr.write(f"[{f:4.0%}] {m}")))
            except PocError as exc:
                raise CommandError(str(exc)) from None
        if task == CAUSAL_LM:
            self._print_lm(results, candidates, config.batch_sizes, opts)
        else:
            self._print(results, candidates, config.batch_sizes)
        if opts["json_out"]:
            Path(opts["json_out"]).write_text(
                json.dumps([r.__dict__ for r in results], indent=2, default=str)
            )

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

    def _print(self, results, candidates, batch_sizes):
        labels = {c.key: registry.pipeline_label(c.pipeline) for c in candidates}
        base = results[0].figures
        self._header(results)
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

    def _print_lm(self, results, candidates, batch_sizes, opts):
        """Per candidate: perplexity, TTFT and inter-token latency at the first batch size, tokens/s there and
        its ratio to the baseline, size, peak memory, and the hardware cost of 1M output tokens at the
        best measured batch size (price ÷ (tokens/s × utilisation × 3600) × 1M; no latency target here)."""
        labels = {c.key: registry.pipeline_label(c.pipeline) for c in candidates}
        base = results[0].figures
        first = batch_sizes[0]
        self._header(results)
        point = results[0].figures["latency"][0]
        self.stdout.write(
            f"prompts up to {opts['max_prompt_tokens']} tokens (mean {point['prompt_tokens']:.1f}), "
            f"{point['new_tokens']} new tokens per request, price {opts['price_per_hour']}/h at "
            f"{opts['utilisation']} utilisation\n"
        )
        self.stdout.write(
            f"{'candidate':<52} {'ppl':>7} {'ppl/base':>8} {f'TTFT p50 b{first}':>14} {'p95':>8} "
            f"{'ITL p50':>8} {f'tok/s b{first}':>10} {'speedup':>8} {'best tok/s':>10} {'size MB':>8} "
            f"{'smaller':>7} {'peak MB':>8} {'$/1M tok b1':>11} {'$/1M tok best':>13}"
        )
        base_b1 = next(p for p in base["latency"] if p["batch_size"] == first)
        for result in results:
            if not result.ok:
                self.stdout.write(f"{labels[result.key]:<52} failed: {result.error}")
                continue
            fig = result.figures
            b1 = next(p for p in fig["latency"] if p["batch_size"] == first)
            best = max(p["tokens_per_s"] for p in fig["latency"])
            self.stdout.write(
                f"{labels[result.key]:<52} {fig['perplexity']:>7.3f} {fig['perplexity'] / base['perplexity']:>8.3f} "
                f"{b1['ttft_p50_ms']:>12.1f}ms {b1['ttft_p95_ms']:>6.1f}ms {b1['itl_p50_ms']:>6.1f}ms "
                f"{b1['tokens_per_s']:>10.1f} {b1['tokens_per_s'] / base_b1['tokens_per_s']:>7.2f}x {best:>10.1f} "
                f"{fig['size_bytes'] / 1e6:>8.1f} {base['size_bytes'] / fig['size_bytes']:>6.2f}x "
                f"{(fig['peak_memory_bytes'] or 0) / 1e6:>8.0f} "
                f"{self._cost(b1['tokens_per_s'], opts):>11.4f} {self._cost(best, opts):>13.4f}"
            )

    @staticmethod
    def _cost(tokens_per_s: float, opts) -> Decimal:
        capacity = Decimal(str(tokens_per_s)) * opts["utilisation"] * 3600
        return opts["price_per_hour"] / capacity * 1_000_000
