"""Quantization techniques."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugins.base import Context, Param, Technique


def quantize_linear_dynamic(model: Any, *, only: set[str] | None = None, per_channel: bool = True) -> Any:
    """Replace Linear layers (all, or those named in ``only``) by dynamically quantized int8 ones."""
    import warnings

    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec: Any = {torch.nn.Linear: qconfig} if only is None else {name: qconfig for name in only}
    with warnings.catch_warnings():
        # torch.ao's eager quantization is deprecated in favour of torchao, but it is the one path with
        # fast fbgemm int8 kernels on CPU in eager mode today.
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=False)


class DynamicInt8(Technique):
    """Dynamic int8 quantization of every Linear layer: weights stored as int8, activations quantized on
    the fly per batch, int8 matrix multiplies through fbgemm on x86 CPUs.

    Source: PyTorch ``torch.ao.quantization.quantize_dynamic`` (Jacob et al. 2018, "Quantization and
    Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference"); the dynamic variant as
    in the PyTorch BERT dynamic quantization tutorial. Embeddings and LayerNorm stay in fp32.
    """

    name = "quantize.dynamic-int8"
    title = "Dynamic int8 quantization (Linear layers)"
    family = "quantize"
    devices = ("cpu",)
    tasks = ("sequence-classification", "causal-lm")
    params = (
        Param(
            "per_channel",
            bool,
            True,
            "One scale per output channel instead of one per layer: usually keeps more accuracy at the "
            "same size and speed.",
        ),
    )

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        ctx.report(0.0, "quantizing Linear layers to int8")
        quantized = quantize_linear_dynamic(model.to("cpu").eval(), per_channel=params["per_channel"])
        ctx.report(1.0, "quantized")
        return quantized
