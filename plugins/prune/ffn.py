"""Structured pruning of feed-forward neurons by importance (BERT-style encoders, Llama-style decoders)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugins.base import Context, Technique, TechniqueError
from plugins.prune.common import (
    PRUNED,
    RECOVERY,
    SCORED,
    amount_param,
    bert_blocks,
    count_removed,
    importance_batches_param,
    on_device,
    recover,
    sample_batches,
    slice_linear,
)
from plugins.prune.importance import Scored, gate_importance

#: The feed-forward block of Llama-style decoders (Llama, Mistral, Qwen2, SmolLM2): down(act(gate(x)) * up(x))
GATED_MLP = ("gate_proj", "up_proj", "down_proj")


def _ffn_layers(model: Any, what: str) -> list[tuple[list[tuple[Any, str]], tuple[Any, str]]]:
    """Per transformer block, the Linear layers whose output rows are the feed-forward neurons (as
    (module, attribute) pairs) and the one whose input columns are: ``intermediate.dense`` and
    ``output.dense`` in a BERT-style encoder; ``mlp.gate_proj``, ``mlp.up_proj`` and ``mlp.down_proj`` in a
    Llama-style decoder."""
    import torch

    from plugins.layers import transformer_layers

    parent, attr = transformer_layers(model)
    blocks = list(getattr(parent, attr))
    mlps = [block.mlp for block in blocks if hasattr(block, "mlp")]
    if len(mlps) == len(blocks) and all(all(hasattr(mlp, name) for name in GATED_MLP) for mlp in mlps):
        for mlp in mlps:
            if not all(isinstance(getattr(mlp, name), torch.nn.Linear) for name in GATED_MLP):
                raise TechniqueError(
                    f"{what} needs plain Linear layers; this model's are {type(mlp.down_proj).__name__}. "
                    "Put pruning before quantization in the pipeline."
                )
        return [([(mlp, "gate_proj"), (mlp, "up_proj")], (mlp, "down_proj")) for mlp in mlps]
    if not any(hasattr(block, "intermediate") for block in blocks):
        raise TechniqueError(
            f"{what} supports BERT-style encoders (BERT, RoBERTa, ELECTRA, MiniLM) and Llama-style "
            f"decoders (an mlp with gate_proj, up_proj and down_proj); the blocks of {type(model).__name__} "
            "are laid out differently"
        )
    return [([(block.intermediate, "dense")], (block.output, "dense")) for block in bert_blocks(model, what)]


def _ranked(score: Any, size: int) -> list[int]:
    """The neurons from the most important down; a stable ranking: ties (e.g. dead neurons) go by position."""
    return sorted(range(size), key=lambda j: (-float(score[j]), j))


class FfnPruning(Technique):
    """Structured pruning of feed-forward neurons by importance: in every layer the same number of the least
    important intermediate neurons is removed physically (rows of the intermediate Linear, columns of the
    output Linear), so ``config.intermediate_size`` describes the result and it saves like any model.

    Source: the first-order Taylor importance of Molchanov et al. 2019, "Importance Estimation for Neural
    Network Pruning" (``|Σ activation × gradient|`` over a few training batches), applied to FFN neurons as
    in Kwon et al. 2022, "A Fast Post-Training Pruning Framework for Transformers" (which uses a mask's
    Fisher information instead). Neurons are ranked within each layer. The loss is the cross-entropy to the
    gold labels, or to the teacher's predictions where a text has none.

    Causal LMs with Llama-style gated MLPs (``down_proj(act(gate_proj(x)) * up_proj(x))``) lose the same
    rows of ``gate_proj`` and ``up_proj`` and columns of ``down_proj``, as LLM-Pruner (Ma et al. 2023) prunes
    them; the importance is the Taylor score at ``down_proj``'s input and the loss next-token cross-entropy
    on the training texts.
    """

    name = "prune.ffn"
    title = "Feed-forward neuron pruning (structured, by importance)"
    family = "prune"
    tasks = ("sequence-classification", "causal-lm")
    params = (amount_param("feed-forward neurons of each layer"), importance_batches_param(), RECOVERY)

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import torch

        model = on_device(model, ctx)
        layers = _ffn_layers(model, "Feed-forward pruning")
        sizes = {getattr(*cols).in_features for _, cols in layers}
        if len(sizes) != 1:
            raise TechniqueError(
                f"The layers' feed-forward widths differ ({', '.join(map(str, sorted(sizes)))}); this "
                "technique needs them equal"
            )
        size = sizes.pop()
        kept_count = size - count_removed(params["amount"], size)
        if kept_count < 1:
            raise TechniqueError(f"The feed-forward layers have {size} neurons: there is nothing to prune")

        batches = sample_batches(ctx, params["importance_batches"], "feed-forward neurons")
        ctx.report(0.0, f"scoring {size} feed-forward neurons per layer on {len(batches)} training batches")
        scored = Scored(model, ctx, batches, reference=False)
        scores = gate_importance(
            model, scored, [(getattr(*cols), size, 1) for _, cols in layers], ctx.report, "neurons"
        )

        ctx.report(SCORED, f"keeping {kept_count} of {size} neurons per layer")
        for (rows, (owner, attr)), score in zip(layers, scores, strict=True):
            order = _ranked(score, size)
            index = torch.tensor(sorted(order[:kept_count]))
            for row_module, row_attr in rows:
                setattr(row_module, row_attr, slice_linear(getattr(row_module, row_attr), index, 0))
            setattr(owner, attr, slice_linear(getattr(owner, attr), index, 1))
            if isinstance(getattr(owner, "intermediate_size", None), int):  # LlamaMLP records its width
                owner.intermediate_size = kept_count
        model.config.intermediate_size = kept_count
        ctx.notes["feed-forward neurons per layer"] = f"{kept_count} of {size}"
        ctx.report(PRUNED, "neurons removed")
        return recover(model, ctx, params["recovery_steps"])
