"""Structured attention-head pruning by importance (BERT-style encoders)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from plugins.base import Context, ParamError, Technique, TechniqueError
from plugins.prune.common import (
    PRUNED,
    RECOVERY,
    SCORED,
    amount_param,
    bert_blocks,
    causal_lm_refusal,
    count_removed,
    importance_batches_param,
    on_device,
    recover,
    sample_batches,
    slice_linear,
)
from plugins.prune.importance import Scored, gate_importance
from plugins.prune.shapes import PRUNED_SHAPES

if TYPE_CHECKING:
    from plugins.model_info import ModelInfo


class HeadPruning(Technique):
    """Structured attention-head pruning by importance: the least important heads, ranked across all layers,
    are removed physically (their query/key/value rows and output-projection columns are cut out), keeping at
    least one head per layer.

    Source: Michel et al. 2019, "Are Sixteen Heads Really Better than One?": a head's importance is the
    accumulated ``|∂L/∂ξ|`` of a mask ``ξ`` on its output over a few training batches, normalised per layer.
    The loss is the cross-entropy to the gold labels, or to the teacher's predictions where a text has none.
    transformers 5 has neither ``head_mask`` nor ``prune_heads``: the mask is a hook on the attention output
    projection, and layers with different head counts are saved with the shapes from ``pruned_shapes``.
    Sequence classification only: the decoders of causal LMs share key/value heads between query heads
    (grouped-query attention), which this per-head surgery does not handle.
    """

    name = "prune.heads"
    title = "Attention-head pruning (structured, by importance)"
    family = "prune"
    params = (amount_param("attention heads"), importance_batches_param(), RECOVERY)
    formats = (PRUNED_SHAPES,)

    @classmethod
    def refusal(cls, *, device: str, task: str) -> str | None:
        return causal_lm_refusal(
            super().refusal(device=device, task=task),
            task,
            "it edits BERT-style attention, not a decoder's grouped-query attention",
        )

    @classmethod
    def check_for_model(cls, params: Mapping[str, Any], model_info: ModelInfo) -> None:
        if model_info.attention_heads == 1:
            raise ParamError(
                "the model has one attention head per layer, and every layer keeps at least one: there is "
                "no head to prune; choose another technique"
            )

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import torch

        refusal = self.refusal(device=ctx.device, task=ctx.task)
        if refusal:
            raise TechniqueError(refusal)
        model = on_device(model, ctx)
        blocks = bert_blocks(model, "Head pruning")
        layers = []
        for block in blocks:
            self_attention = block.attention.self
            width = int(getattr(self_attention, "attention_head_size", 0)) or (
                model.config.hidden_size // model.config.num_attention_heads
            )
            heads = self_attention.query.out_features // width
            layers.append((block, width, heads))
        total = sum(h for _, _, h in layers)
        removable = total - len(layers)
        if removable <= 0:
            raise TechniqueError("Every layer is down to one attention head: there is no head left to prune")
        remove = min(count_removed(params["amount"], total), removable)

        batches = sample_batches(ctx, params["importance_batches"], "attention heads")
        ctx.report(0.0, f"scoring {total} attention heads on {len(batches)} training batches")
        scored = Scored(model, ctx, batches, reference=False)
        scores = gate_importance(
            model, scored, [(b.attention.output.dense, h, w) for b, w, h in layers], ctx.report, "heads"
        )
        # Per-layer L2 normalisation, as in Michel et al.'s code, makes scores comparable across layers.
        scores = [s / (s.norm() + 1e-20) for s in scores]

        ranking = sorted((float(s[h]), layer, h) for layer, s in enumerate(scores) for h in range(len(s)))
        left = [h for _, _, h in layers]
        dropped: list[set[int]] = [set() for _ in layers]
        for _, layer, head in ranking:
            if sum(map(len, dropped)) == remove:
                break
            if left[layer] > 1:
                dropped[layer].add(head)
                left[layer] -= 1

        ctx.report(SCORED, f"removing {remove} of {total} heads")
        for (block, width, heads), gone in zip(layers, dropped, strict=True):
            if not gone:
                continue
            kept = [h for h in range(heads) if h not in gone]
            index = torch.cat([torch.arange(h * width, (h + 1) * width) for h in kept])
            self_attention = block.attention.self
            for proj in ("query", "key", "value"):
                setattr(self_attention, proj, slice_linear(getattr(self_attention, proj), index, 0))
            block.attention.output.dense = slice_linear(block.attention.output.dense, index, 1)
            self_attention.num_attention_heads = len(kept)
            self_attention.all_head_size = len(kept) * width
        ctx.notes["heads removed"] = f"{remove} of {total}"
        ctx.notes["heads kept per layer"] = ", ".join(str(n) for n in left)
        ctx.notes["removed heads (layer: heads)"] = "; ".join(
            f"{layer}: {','.join(map(str, sorted(gone)))}" for layer, gone in enumerate(dropped) if gone
        )
        ctx.report(PRUNED, "heads removed")
        return recover(model, ctx, params["recovery_steps"])
