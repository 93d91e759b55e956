"""Runtime techniques: the last step of a pipeline hands the model to the runtime it is served with.

Each runtime serves the model behind one interface (``plugins.runtime.served.ServedModel``), so accuracy,
perplexity and latency are measured by the same code whatever runs the model, and stores it in the
runtime's own code-free format (ONNX, OpenVINO IR) with its weights in safetensors
(``plugins.runtime.storage``). This module holds metadata only: importing it loads no torch and no runtime.
"""

from collections.abc import Sequence
from typing import Any

from plugins.runtime.onnx_runtime import ONNX, OnnxRuntime
from plugins.runtime.openvino_runtime import OPENVINO, OpenVino
from plugins.runtime.vllm_runtime import VLLM, Vllm

#: The runtimes a request can say its model is served with today, per device, and the technique that
#: converts the baseline to each ("pytorch": transformers in eager mode, the model as it is).
PYTORCH = "pytorch"
SERVING_RUNTIMES = {
    PYTORCH: None,
    "onnxruntime": OnnxRuntime.name,
    "openvino": OpenVino.name,
    "vllm": Vllm.name,
}
RUNTIMES_BY_DEVICE = {"cpu": (PYTORCH, "onnxruntime", "openvino"), "cuda": (PYTORCH, "vllm")}


def serving_refusal(runtime: str, *, device: str) -> str | None:
    """Why a model cannot be served with ``runtime`` on ``device`` (None when it can)."""
    allowed = RUNTIMES_BY_DEVICE.get(device, (PYTORCH,))
    if runtime not in SERVING_RUNTIMES:
        return f"unknown serving runtime {runtime!r}; choose one of {', '.join(allowed)}"
    if runtime not in allowed:
        return f"{runtime} does not run on {device}; on {device} choose one of {', '.join(allowed)}"
    return None


def baseline_pipeline(runtime: str) -> list[dict[str, object]]:
    """The pipeline that turns the original model into the model as it is served today ([] for PyTorch)."""
    technique = SERVING_RUNTIMES.get(runtime)
    return [{"technique": technique, "params": {}}] if technique else []


def served_pipeline(pipeline: Sequence[dict[str, Any]], runtime: str) -> tuple[list[dict[str, Any]], str]:
    """The steps that produce ``pipeline``'s model as it would be served, and a note saying how it is served.

    The baseline ([]) is the original model converted by the runtime the request says serves it today. A
    candidate without a runtime step is served on that runtime too (a compressed model ships on the same
    stack), so its speedup compares like with like; one that ends in a quantizer cannot be exported to a
    runtime (a runtime has its own int8 options) and stays in PyTorch, which the note says."""
    steps = [dict(step) for step in pipeline]
    served = baseline_pipeline(runtime)
    if not served:
        return steps, ""
    if not steps:
        return served, ""
    from plugins import registry

    families = [registry.get(step["technique"]).family for step in steps]
    if "runtime" in families:
        return steps, ""
    if families[-1] == "quantize":
        return steps, (
            f"PyTorch: a model changed by {steps[-1]['technique']} cannot be exported to {runtime}, which serves "
            f"the current model; compare it with a candidate that uses {runtime}'s own int8 option"
        )
    return steps + served, f"{runtime}, as the current model is (the {served[0]['technique']} step is added)"


__all__ = [
    "served_pipeline",
    "ONNX",
    "OPENVINO",
    "PYTORCH",
    "RUNTIMES_BY_DEVICE",
    "SERVING_RUNTIMES",
    "VLLM",
    "OnnxRuntime",
    "OpenVino",
    "Vllm",
    "baseline_pipeline",
    "serving_refusal",
]
