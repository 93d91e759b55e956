"""Quantization techniques, each in its own module with the save format it needs (``plugins.formats``)."""

from plugins.quantize.dynamic_int8 import DYNAMIC_INT8, DynamicInt8, quantize_linear_dynamic
from plugins.quantize.half import HalfPrecision
from plugins.quantize.weight_only import TORCHAO, WeightOnlyQuantization, is_torchao_tensor

__all__ = [
    "DYNAMIC_INT8",
    "TORCHAO",
    "DynamicInt8",
    "HalfPrecision",
    "WeightOnlyQuantization",
    "is_torchao_tensor",
    "quantize_linear_dynamic",
]
