"""ONNX Runtime: the model exported to ONNX and served by ONNX Runtime's CPU provider, optionally int8.

The format, ``roi-planner/onnx``, is ``model.onnx`` (the graph, ONNX's own code-free protobuf format) whose
weights are external data inside ``model.safetensors`` (``plugins.runtime.storage``), with config.json and
the tokenizer. ``onnxruntime.InferenceSession("model.onnx")`` runs it as it is.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plugins.artifacts import ModelLoadError
from plugins.base import Context, Param, Technique, TechniqueError
from plugins.runtime.storage import ONNX_GRAPH, read_onnx, save_onnx, served_format

ONNX = "roi-planner/onnx"
RUNTIME = "onnxruntime"


def session(source: Any, *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session over a path or serialized graph, with the worker's fixed thread count."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle worker threads sleep instead of spinning: a spinning pool keeps the cores busy after each call,
    # slowing whatever runs next (the HTTP server and batcher of a replica, or the model timed after it).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def backend(source: Any) -> Any:
    from plugins.runtime.served import Backend

    class OrtBackend(Backend):
        runtime = RUNTIME

        def __init__(self) -> None:
            self.session = session(source)
            self.input_names = tuple(i.name for i in self.session.get_inputs())
            self.output_names = tuple(o.name for o in self.session.get_outputs())

        def run(self, feed: dict[str, Any]) -> list[Any]:
            return self.session.run(None, {k: v for k, v in feed.items() if k in self.input_names})

    return OrtBackend()


def _served_model(
    proto: Any, runner: Any, *, config: Any, task: str, kv: Any, details: dict[str, Any], base: Path | None
) -> Any:
    from plugins.runtime.served import ServedModel
    from plugins.runtime.storage import onnx_tensors

    return ServedModel(
        config,
        runner,
        task=task,
        kv=kv,
        source=proto,
        tensors=lambda: onnx_tensors(proto, base),
        details=details,
    )


def _quantize(fp32: Path, out: Path, ctx: Context, kv: Any, params: Mapping[str, Any]) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from plugins.runtime.export import calibration_feeds

    if params["quantization"] == "dynamic-int8":
        ctx.report(0.5, "quantizing the graph to int8 (dynamic)")
        quantize_dynamic(fp32, out, weight_type=QuantType.QInt8, per_channel=params["per_channel"])
        return out
    ctx.report(0.4, f"calibrating on {params['calibration_samples']} training texts")
    reference = backend(str(fp32))
    feeds = calibration_feeds(
        reference.run, ctx, kv, samples=params["calibration_samples"], names=reference.input_names
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.feeds, None)

    ctx.report(0.6, "quantizing the graph to int8 (static, QDQ)")
    quantize_static(
        fp32,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=params["per_channel"],
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
    return out


# --- the format -------------------------------------------------------------------------------------------


def _serve_saved(path: Path, proto: Any, *, config: Any, task: str, kv: Any, details: dict[str, Any]) -> Any:
    try:
        runner = backend(str(path / ONNX_GRAPH))
    except Exception as exc:  # onnxruntime raises its own exception types for a graph it refuses
        raise ModelLoadError(f"{path.name}: ONNX Runtime refuses the graph: {str(exc)[:300]}") from None
    return _served_model(proto, runner, config=config, task=task, kv=kv, details=details, base=path)


ONNX_FORMAT = served_format(
    ONNX,
    runtime=RUNTIME,
    title="ONNX Runtime",
    save_graph=save_onnx,
    read_graph=read_onnx,
    serve=_serve_saved,
)


class OnnxRuntime(Technique):
    """Serves the model with ONNX Runtime on the CPU: exported to ONNX (torch.onnx's dynamo exporter, the
    KV cache of a causal LM as graph inputs and outputs), graph optimisations on, optionally quantized to
    int8 — dynamically (weights int8, activations quantized per call) or statically (QDQ, activation ranges
    calibrated on the training texts).

    Source: ONNX Runtime (Microsoft), ``onnxruntime.quantization.quantize_dynamic`` and ``quantize_static``;
    the method of Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference". The last step of a pipeline: what it measures is the model as
    ONNX Runtime serves it.
    """

    name = "runtime.onnxruntime"
    title = "ONNX Runtime (optionally int8)"
    family = "runtime"
    devices = ("cpu",)
    tasks = ("sequence-classification", "causal-lm")
    formats = (ONNX_FORMAT,)
    params = (
        Param(
            "quantization",
            str,
            "none",
            "none: the fp32 graph; dynamic-int8: int8 weights, activations quantized per call (no data "
            "needed); static-int8: activation ranges calibrated on the training texts beforehand.",
            choices=("none", "dynamic-int8", "static-int8"),
        ),
        Param("per_channel", bool, True, "int8 with one scale per output channel (usually more accurate)."),
        Param(
            "calibration_samples",
            int,
            64,
            "Training texts the static int8 calibration reads (never the held-out ones).",
            1,
            2048,
        ),
    )

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import onnx

        from plugins.runtime.export import export_onnx, prepare

        model = prepare(model, ctx)
        with tempfile.TemporaryDirectory(
            dir=ctx.work_dir if ctx.work_dir and Path(ctx.work_dir).is_dir() else None
        ) as tmp:
            ctx.report(0.0, "exporting the model to ONNX")
            graph, kv = export_onnx(model, ctx.tokenizer, ctx.task, Path(tmp) / "model-fp32.onnx")
            if params["quantization"] != "none":
                graph = _quantize(graph, Path(tmp) / "model-int8.onnx", ctx, kv, params)
            proto = onnx.load_model(str(graph))
        try:
            runner = backend(proto.SerializeToString())
        except Exception as exc:
            raise TechniqueError(f"ONNX Runtime refuses the exported graph: {str(exc)[:300]}") from None
        details = {
            "task": ctx.task,
            "quantization": params["quantization"],
            "kv": vars(kv) if kv is not None else None,
        }
        ctx.notes["runtime"] = f"ONNX Runtime, {params['quantization']}"
        ctx.report(1.0, "ready on ONNX Runtime")
        return _served_model(
            proto, runner, config=model.config, task=ctx.task, kv=kv, details=details, base=None
        )
