"""Half precision: bf16 or fp16 weights, saved by transformers in that dtype."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugins.base import Context, Param, Technique, TechniqueError

HALF_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


class HalfPrecision(Technique):
    """Casts every weight to 16-bit floats: bf16 (the range of fp32, less precision) or fp16 (more
    precision, smaller range; fast on GPUs only).

    Source: mixed/half-precision inference as in Micikevicius et al. 2018, "Mixed Precision Training", and
    bfloat16 (Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training"); done with PyTorch's
    ``Module.to(dtype)``. Saved by transformers in that dtype, so any transformers loads it.
    """

    name = "quantize.half"
    title = "Half precision (bf16 / fp16)"
    family = "quantize"
    devices = ("cpu", "cuda")
    tasks = ("sequence-classification", "causal-lm")
    speedup_caveat = (
        "bf16 halves the size, but its matrix multiplies are faster than fp32 only on CPUs with native "
        "bf16 instructions (AMX, or AVX512-BF16) and on GPUs; elsewhere it can be slower."
    )
    params = (
        Param(
            "dtype",
            str,
            "bf16",
            "bf16 keeps fp32's range (safe for most models, fast on recent CPUs and GPUs); fp16 keeps "
            "more precision but can overflow, and runs only on CUDA.",
            choices=tuple(HALF_DTYPES),
        ),
    )

    @classmethod
    def check(cls, params: Mapping[str, Any], *, device: str, task: str) -> str | None:
        if params.get("dtype") == "fp16" and not device.startswith("cuda"):
            return "fp16 needs a CUDA device; use bf16 on CPU"
        return None

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import torch

        problem = self.check(params, device=ctx.device, task=ctx.task)
        if problem:
            raise TechniqueError(problem)
        dtype = getattr(torch, HALF_DTYPES[params["dtype"]])
        ctx.report(0.0, f"casting the weights to {params['dtype']}")
        # Buffers that are not saved (rotary frequencies) stay in fp32, as transformers computes them when
        # it loads the saved model: the model measured after reloading is the one produced here.
        unsaved = [
            (module, name, buffer)
            for module in model.modules()
            for name, buffer in module.named_buffers(recurse=False)
            if name in module._non_persistent_buffers_set
        ]
        model = model.to(dtype=dtype).eval()
        for module, name, buffer in unsaved:
            module._buffers[name] = buffer
        model.config.dtype = dtype
        ctx.report(1.0, f"cast to {params['dtype']}")
        return model
