"""Compare a runtime technique with the runtime library called by hand, at batch 1 on the same inputs.

    python manage.py runtime_check MODEL_DIR [--task sequence-classification] [--runtime openvino]
        [--quantization none] [--rounds 30]

Loads the model, applies the runtime technique (``runtime.onnxruntime`` or ``runtime.openvino``), and
builds the same graph by hand (``onnxruntime.InferenceSession`` or ``openvino.Core().compile_model`` on
the technique's exported files, with the same thread count). Both are timed in interleaved rounds on the
same tokenized eval-like texts, and the PyTorch model next to them; it prints the medians side by side with
the ratio, which should be within 10% (the interface adds only the conversion between torch and numpy).
A hand-run check: nothing in the web process imports it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Time a runtime technique against its runtime library called directly (batch 1, interleaved)."

    def add_arguments(self, parser):
        parser.add_argument("model_dir", type=Path)
        parser.add_argument(
            "--task", default="sequence-classification", choices=["sequence-classification", "causal-lm"]
        )
        parser.add_argument("--runtime", default="openvino", choices=["onnxruntime", "openvino"])
        parser.add_argument("--quantization", default="none")
        parser.add_argument("--rounds", type=int, default=30)
        parser.add_argument("--threads", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        import torch

        from plugins import registry
        from plugins.artifacts import load_pretrained, save_model
        from plugins.base import Context, Example
        from workers.measure import fix_threads

        threads = fix_threads(options["threads"])
        task = options["task"]
        model, tokenizer = load_pretrained(options["model_dir"], task)
        texts = [
            "the weather today is cold with rain and wind",
            "the team won the match with a late goal",
            "bake the bread in a hot oven with butter and salt",
        ]
        ctx = Context(
            task=task,
            device="cpu",
            seed=0,
            tokenizer=tokenizer,
            teacher=model,
            train=[Example(t) for t in texts],
            eval=[],
            labels=[],
            max_length=64,
        )
        cls = registry.get(f"runtime.{options['runtime']}")
        try:
            params = cls.clean_params({"quantization": options["quantization"]})
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        served = cls().apply(model, ctx, params)
        with tempfile.TemporaryDirectory() as tmp:
            save_model(served, tokenizer, Path(tmp), card="")
            by_hand = _by_hand(options["runtime"], Path(tmp), params, threads)
            batches = [tokenizer([t], return_tensors="pt") for t in texts]
            feeds = [_feed(served, b) for b in batches]
            units = {
                "technique": lambda i: served(**batches[i]).logits,
                "by hand": lambda i: by_hand(feeds[i]),
                "pytorch": lambda i: model(**batches[i]).logits,
            }
            times: dict[str, list[float]] = {name: [] for name in units}
            with torch.inference_mode():
                for unit in units.values():  # warm-up
                    for i in range(len(batches)):
                        unit(i)
                for round_ in range(options["rounds"]):
                    order = list(units) if round_ % 2 == 0 else list(reversed(units))
                    for name in order:
                        for i in range(len(batches)):
                            started = time.perf_counter()
                            units[name](i)
                            times[name].append(time.perf_counter() - started)
        medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
        self.stdout.write(
            f"{cls.name} ({options['quantization']}), batch 1, {threads} threads, "
            f"{len(times['technique'])} calls each"
        )
        for name, ms in medians.items():
            self.stdout.write(f"  {name:<10} median {ms:8.3f} ms")
        ratio = medians["technique"] / medians["by hand"]
        self.stdout.write(
            f"  technique / by hand = {ratio:.3f} ({'within' if abs(ratio - 1) <= 0.10 else 'outside'} 10%)"
        )
        self.stdout.write(f"  pytorch / technique = {medians['pytorch'] / medians['technique']:.2f}x speedup")


def _feed(served, batch):
    """The numpy inputs the graph takes, built before the clock starts (a causal LM's full prompt)."""
    import numpy as np

    feed = {k: v.numpy() for k, v in batch.items() if k in served.backend.input_names}
    if served.kv is not None:
        length = batch["input_ids"].shape[1]
        feed["position_ids"] = np.arange(length, dtype=np.int64)[None]
        feed["logits_index"] = np.arange(length, dtype=np.int64)
        names = [f"past.{i}.{k}" for i in range(served.kv.layers) for k in ("key", "value")]
        feed.update(zip(names, served.kv.empty(1), strict=True))
    return feed


def _by_hand(runtime_name, path, params, threads):
    """The saved graph run by the runtime library itself, with the same thread count."""
    if runtime_name == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path / "model.onnx"), options, providers=["CPUExecutionProvider"])
        return lambda feed: session.run(None, feed)[0]
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if params.get("precision") == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(path / "openvino_model.xml"), str(path / "model.safetensors")), "CPU", config
    )
    request = compiled.create_infer_request()

    def run(feed):
        request.infer(feed)
        return request.get_output_tensor(0).data.copy()

    return run
