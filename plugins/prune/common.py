"""What the pruning techniques share: parameters, batches of training texts, the teacher's reference
logits, Linear surgery and the recovery fine-tune. Importance is always scored on ``ctx.train`` (never
``ctx.eval``), seeded from ``ctx.seed``."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from plugins.base import Context, Example, Param, TechniqueError

#: Texts per importance batch: enough for stable scores, cheap on a CPU.
IMPORTANCE_BATCH_SIZE = 16
#: Where the importance pass ends and the pruning/recovery part of the progress bar begins.
SCORED = 0.4
PRUNED = 0.5


def amount_param(what: str) -> Param:
    return Param(
        "amount",
        float,
        0.5,
        f"Share of the {what} removed, from 0.05 to 0.95.",
        minimum=0.05,
        maximum=0.95,
    )


def importance_batches_param(default: int = 8) -> Param:
    return Param(
        "importance_batches",
        int,
        default,
        f"Batches of {IMPORTANCE_BATCH_SIZE} training texts used to score importance; more is steadier "
        "and slower. The held-out evaluation data is never used.",
        minimum=1,
        maximum=1000,
    )


RECOVERY = Param(
    "recovery_steps",
    int,
    0,
    "0 = no recovery fine-tune; else that many knowledge-distillation steps from the original teacher "
    "on the training data after pruning.",
    minimum=0,
    maximum=100000,
)


def on_device(model: Any, ctx: Context) -> Any:
    return model.to(ctx.device).eval()


def device_of(model: Any) -> Any:
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def max_length_for(ctx: Context, *models: Any) -> int:
    limits = [getattr(getattr(m, "config", None), "max_position_embeddings", None) for m in models]
    return min([ctx.max_length] + [n for n in limits if isinstance(n, int) and n > 0])


def encode(
    tokenizer: Any, texts: Sequence[str], device: Any, max_length: int, *, causal: bool = False
) -> dict[str, Any]:
    """A batch for the model: padded by the tokenizer for a classifier; for a causal LM padded on the right
    by ``encode_causal_lm``, which needs no pad token."""
    if tokenizer is None:
        raise TechniqueError("This technique needs the model's tokenizer")
    if causal:
        from plugins.causal_lm import encode_causal_lm

        return encode_causal_lm(tokenizer, texts, max_length=max_length, device=device)
    encoded = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {k: v.to(device) for k, v in encoded.items()}


def sample_batches(ctx: Context, batches: int, what: str) -> list[list[Example]]:
    """Up to ``batches`` batches of distinct training examples, drawn with ``ctx.seed``; never ``ctx.eval``."""
    examples = list(ctx.train)
    if not examples:
        raise TechniqueError(
            f"Scoring {what} needs training texts (labels are optional); the held-out evaluation data is "
            "never used for it. Give task data with enough examples for a training split."
        )
    picked = random.Random(ctx.seed).sample(examples, min(len(examples), batches * IMPORTANCE_BATCH_SIZE))
    return [picked[i : i + IMPORTANCE_BATCH_SIZE] for i in range(0, len(picked), IMPORTANCE_BATCH_SIZE)]


def reference_logits(
    model: Any, ctx: Context, texts: Sequence[str], max_length: int, inputs: Mapping[str, Any] | None = None
) -> Any:
    """The original teacher's logits for ``texts`` (read with the teacher's tokenizer), or, without a
    teacher, those of ``model`` as it is now. For a causal LM, ``inputs`` (the model's own encoding of the
    texts) must hold the same tokens: the logits are compared position by position."""
    import torch

    causal = ctx.task == "causal-lm"
    reference, tokenizer = (
        (ctx.teacher, ctx.teacher_tokenizer) if ctx.teacher is not None else (model, ctx.tokenizer)
    )
    encoded = encode(tokenizer, texts, device_of(reference), max_length, causal=causal)
    if causal and inputs is not None:
        from plugins.causal_lm import same_tokens

        if not same_tokens(encoded, inputs):
            raise TechniqueError(
                "The model and the original teacher split the training texts into different tokens, so "
                "their next-token predictions cannot be compared; put vocabulary changes after pruning"
            )
    with torch.no_grad():
        logits = reference(**encoded, **forward_kwargs(ctx)).logits
    return logits.float().to(device_of(model))


def forward_kwargs(ctx: Context) -> dict[str, Any]:
    """Extra forward arguments: a causal LM builds no key-value cache when scoring (nothing reuses it)."""
    return {"use_cache": False} if ctx.task == "causal-lm" else {}


def slice_linear(linear: Any, index: Any, dim: int) -> Any:
    """A new Linear keeping only the output rows (``dim=0``) or input columns (``dim=1``) in ``index``."""
    import torch

    index = index.to(linear.weight.device)
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = None
    if linear.bias is not None:
        bias = linear.bias.detach()[index].clone() if dim == 0 else linear.bias.detach().clone()
    new = torch.nn.Linear(
        weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    new.train(linear.training)
    return new


def bert_blocks(model: Any, what: str) -> list[Any]:
    """The transformer blocks, checked to have the BERT layout that structured pruning edits."""
    import torch

    from plugins.layers import transformer_layers

    parent, attr = transformer_layers(model)
    blocks = list(getattr(parent, attr))
    for block in blocks:
        attention = getattr(block, "attention", None)
        self_attention = getattr(attention, "self", None)
        names = [
            getattr(self_attention, "query", None),
            getattr(self_attention, "key", None),
            getattr(self_attention, "value", None),
            getattr(getattr(attention, "output", None), "dense", None),
            getattr(getattr(block, "intermediate", None), "dense", None),
            getattr(getattr(block, "output", None), "dense", None),
        ]
        if any(m is None for m in names):
            raise TechniqueError(
                f"{what} supports BERT-style encoders (BERT, RoBERTa, ELECTRA, MiniLM); the blocks of "
                f"{type(model).__name__} are laid out differently"
            )
        if not all(isinstance(m, torch.nn.Linear) for m in names):
            raise TechniqueError(
                f"{what} needs plain Linear layers; this model's are {type(names[0]).__name__}. Put pruning "
                "before quantization in the pipeline."
            )
    return blocks


def recover(model: Any, ctx: Context, steps: int) -> Any:
    if steps <= 0:
        ctx.report(1.0, "pruned")
        return model
    from plugins.training import kd_finetune

    stats: dict[str, Any] = {}
    model = kd_finetune(
        model,
        ctx,
        steps=steps,
        epochs=0.0,  # exactly ``steps`` optimizer steps, however many passes over the data that takes
        report=lambda fraction, message: ctx.report(PRUNED + (1 - PRUNED) * fraction, f"recovery: {message}"),
        stats=stats,
    )
    ctx.notes["recovery steps"] = stats.get("steps", steps)
    if "final_loss" in stats:
        ctx.notes["recovery final loss"] = round(float(stats["final_loss"]), 4)
    ctx.report(1.0, "pruned and recovered")
    return model


def causal_lm_refusal(refusal: str | None, task: str, why: str) -> str | None:
    """The base refusal, with the reason and the alternatives when the task is a causal LM."""
    if refusal and task == "causal-lm" and refusal.endswith(f"not {task}"):
        return f"{refusal}: {why}; for a causal LM use prune.layers, prune.ffn or distill.kd"
    return refusal


def count_removed(amount: float, total: int) -> int:
    """How many of ``total`` units ``amount`` removes: at least one."""
    return max(1, round(amount * total))
