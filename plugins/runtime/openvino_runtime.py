"""OpenVINO: the model converted to an OpenVINO model and compiled for the CPU, optionally int8 or int4.

The format, ``roi-planner/openvino``, is ``openvino_model.xml`` (OpenVINO IR, its own code-free graph
format) whose ``Const`` weights are read from ``model.safetensors`` (``plugins.runtime.storage``), with
config.json and the tokenizer. ``openvino.Core().read_model("openvino_model.xml", "model.safetensors")``
reads it as it is.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plugins.base import Context, Param, Technique, TechniqueError
from plugins.runtime.storage import read_openvino, save_openvino, served_format

OPENVINO = "roi-planner/openvino"
RUNTIME = "openvino"
WEIGHT_MODES = ("int8-weights", "int4-weights")


def compile_options(precision: str, threads: int | None = None) -> dict[str, Any]:
    """The CPU plugin's settings: latency hint, the worker's fixed thread count, and the precision
    (``auto``: OpenVINO's default, bf16 where the processor has it; ``f32``: full precision)."""
    import torch

    options: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
    }
    if precision == "f32":
        options["INFERENCE_PRECISION_HINT"] = "f32"
    return options


def backend(model: Any, precision: str) -> Any:
    import openvino as ov

    from plugins.runtime.served import Backend

    class OvBackend(Backend):
        runtime = RUNTIME

        def __init__(self) -> None:
            self.compiled = ov.Core().compile_model(model, "CPU", compile_options(precision))
            self.request = self.compiled.create_infer_request()
            self.input_names = tuple(i.get_any_name() for i in self.compiled.inputs)
            self.output_names = tuple(o.get_any_name() for o in self.compiled.outputs)

        def run(self, feed: dict[str, Any]) -> list[Any]:
            self.request.infer({k: v for k, v in feed.items() if k in self.input_names})
            # Copied: the request reuses its output buffers on the next call, and a cache is fed back.
            return [self.request.get_output_tensor(i).data.copy() for i in range(len(self.output_names))]

    return OvBackend()


def _served_model(
    ov_model: Any, precision: str, *, config: Any, task: str, kv: Any, details: dict[str, Any]
) -> Any:
    from plugins.runtime.served import ServedModel
    from plugins.runtime.storage import openvino_tensors

    return ServedModel(
        config,
        backend(ov_model, precision),
        task=task,
        kv=kv,
        source=ov_model,
        tensors=lambda: openvino_tensors(ov_model),
        details=details,
    )


def group_size(model: Any) -> int:
    """int4 group size: 128, or the largest power of two dividing every hidden width (small models)."""
    config = model.config
    widths = [getattr(config, n, None) for n in ("hidden_size", "intermediate_size")]
    common = math.gcd(*[int(w) for w in widths if w]) or 128
    return min(128, common & -common)


def _quantize(ov_model: Any, ctx: Context, kv: Any, model: Any, params: Mapping[str, Any]) -> Any:
    import nncf

    from plugins.runtime.export import calibration_feeds

    mode = params["quantization"]
    if mode in WEIGHT_MODES:
        ctx.report(0.5, f"compressing the weights to {mode.split('-')[0]}")
        if mode == "int8-weights":
            return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)
        return nncf.compress_weights(
            ov_model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=group_size(model), ratio=1.0
        )
    ctx.report(0.4, f"calibrating on {params['calibration_samples']} training texts")
    reference = backend(ov_model, "f32")
    feeds = calibration_feeds(
        reference.run, ctx, kv, samples=params["calibration_samples"], names=reference.input_names
    )
    ctx.report(0.6, "quantizing weights and activations to int8 (NNCF)")
    return nncf.quantize(
        ov_model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds)
    )


# --- the format -------------------------------------------------------------------------------------------


def _serve_saved(
    path: Path, ov_model: Any, *, config: Any, task: str, kv: Any, details: dict[str, Any]
) -> Any:
    precision = str(details.get("precision", "auto"))
    return _served_model(ov_model, precision, config=config, task=task, kv=kv, details=details)


OPENVINO_FORMAT = served_format(
    OPENVINO,
    runtime=RUNTIME,
    title="OpenVINO",
    save_graph=save_openvino,
    read_graph=read_openvino,
    serve=_serve_saved,
)


class OpenVino(Technique):
    """Serves the model with OpenVINO on the CPU: exported to ONNX, converted with
    ``openvino.convert_model`` and compiled by the CPU plugin (latency hint, bf16 where the processor has
    it unless f32 is asked for); a causal LM keeps its KV cache as graph inputs and outputs. Optionally
    int8 through NNCF: post-training quantization of weights and activations calibrated on the training
    texts, or, for a causal LM, weight compression to int8 or int4 (grouped).

    Source: OpenVINO (Intel) and NNCF's ``nncf.quantize`` (post-training quantization with SmoothQuant-style
    range setting for transformers) and ``nncf.compress_weights`` (weight-only int8/int4, as optimum-intel
    does for LLMs). The last step of a pipeline: what it measures is the model as OpenVINO serves it.
    """

    name = "runtime.openvino"
    title = "OpenVINO (optionally int8/int4)"
    family = "runtime"
    devices = ("cpu",)
    tasks = ("sequence-classification", "causal-lm")
    formats = (OPENVINO_FORMAT,)
    params = (
        Param(
            "quantization",
            str,
            "none",
            "none: the converted model; int8: weights and activations, calibrated on the training texts; "
            "int8-weights / int4-weights (text generation): weights only, no data needed.",
            choices=("none", "int8", "int8-weights", "int4-weights"),
        ),
        Param(
            "precision",
            str,
            "auto",
            "auto: OpenVINO's default (bf16 arithmetic where the processor supports it); f32: full precision.",
            choices=("auto", "f32"),
        ),
        Param(
            "calibration_samples",
            int,
            64,
            "Training texts the int8 calibration reads (never the held-out ones).",
            1,
            2048,
        ),
    )

    @classmethod
    def check(cls, params: Mapping[str, Any], *, device: str, task: str) -> str | None:
        if params["quantization"] in WEIGHT_MODES and task != "causal-lm":
            return "weight-only compression is for text generation; use int8 for a classifier"
        return None

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import openvino as ov

        from plugins.runtime.export import export_onnx, prepare

        model = prepare(model, ctx)
        with tempfile.TemporaryDirectory(
            dir=ctx.work_dir if ctx.work_dir and Path(ctx.work_dir).is_dir() else None
        ) as tmp:
            ctx.report(0.0, "exporting the model to ONNX")
            graph, kv = export_onnx(model, ctx.tokenizer, ctx.task, Path(tmp) / "model.onnx")
            ctx.report(0.3, "converting to OpenVINO")
            ov_model = ov.convert_model(str(graph))
        if params["quantization"] != "none":
            try:
                ov_model = _quantize(ov_model, ctx, kv, model, params)
            except (RuntimeError, ValueError) as exc:  # nncf's own errors derive from these
                raise TechniqueError(f"NNCF could not quantize the model: {str(exc)[:300]}") from None
        details = {
            "task": ctx.task,
            "quantization": params["quantization"],
            "precision": params["precision"],
            "kv": vars(kv) if kv is not None else None,
        }
        ctx.notes["runtime"] = f"OpenVINO, {params['quantization']}, precision {params['precision']}"
        ctx.report(1.0, "ready on OpenVINO")
        return _served_model(
            ov_model, params["precision"], config=model.config, task=ctx.task, kv=kv, details=details
        )
