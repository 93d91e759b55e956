"""Unstructured global magnitude pruning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugins.base import Context, Technique, TechniqueError
from plugins.prune.common import amount_param, on_device


class MagnitudePruning(Technique):
    """Unstructured global magnitude pruning: the given share of the transformer layers' Linear weights with
    the smallest absolute values, ranked across all layers together, set to zero for good.

    Source: Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks"; Zhu &
    Gupta 2017, "To prune, or not to prune". One-shot, without retraining, via
    ``torch.nn.utils.prune.global_unstructured`` with ``L1Unstructured``, then ``prune.remove``. Embeddings,
    the pooler and the classifier (or a causal LM's LM head) are left dense.
    """

    name = "prune.magnitude"
    title = "Magnitude pruning (unstructured, global)"
    family = "prune"
    tasks = ("sequence-classification", "causal-lm")
    params = (amount_param("transformer layers' Linear weights set to zero"),)
    speedup_caveat = (
        "unstructured sparsity: the zeros are still stored and multiplied on dense kernels, so the model is "
        "neither smaller nor faster"
    )

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import torch
        from torch.nn.utils import prune

        from plugins.layers import transformer_layers

        model = on_device(model, ctx)
        parent, attr = transformer_layers(model)
        targets = [(m, "weight") for m in getattr(parent, attr).modules() if isinstance(m, torch.nn.Linear)]
        if not targets:
            raise TechniqueError(
                "This model's transformer layers have no plain Linear layers to prune; put pruning before "
                "quantization"
            )
        ctx.report(0.0, f"pruning {params['amount']:.0%} of {len(targets)} weight matrices by magnitude")
        prune.global_unstructured(
            targets, pruning_method=prune.L1Unstructured, amount=float(params["amount"])
        )
        for module, name in targets:
            prune.remove(module, name)

        pruned = sum(m.weight.numel() for m, _ in targets)
        pruned_zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
        everything = list(model.parameters())  # parameters() lists tied tensors once
        total = sum(p.numel() for p in everything)
        zeros = sum(int((p == 0).sum()) for p in everything)
        ctx.notes["sparsity of pruned weights"] = round(pruned_zeros / pruned, 4)
        ctx.notes["overall sparsity"] = round(zeros / total, 4)
        ctx.notes["pruned weight matrices"] = len(targets)
        ctx.report(1.0, f"{pruned_zeros / pruned:.1%} of the transformer layers' Linear weights are zero")
        return model
