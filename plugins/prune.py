"""Pruning techniques: unstructured magnitude pruning, and structured pruning of attention heads,
feed-forward neurons, whole layers and the vocabulary.

Structured pruning removes weights physically (smaller matrices, a smaller config where the config can say
so); importance is always scored on ``ctx.train`` (never ``ctx.eval``), seeded from ``ctx.seed``, and an
optional recovery fine-tune distils from the original teacher (``plugins.training.kd_finetune``).
Magnitude, feed-forward and layer pruning also take Llama-style causal LMs, whose scores use next-token
losses over the non-padding tokens; head and vocabulary pruning are for classifiers only.

Attention heads pruned unevenly across layers cannot be described by a transformers config (its head
size is ``hidden_size / num_attention_heads`` for every layer, and transformers 5 dropped
``config.pruned_heads``), so ``pruned_shapes``/``apply_pruned_shapes`` describe and rebuild those shapes for
the artifact loader. Heavy imports (torch, transformers) happen inside the functions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from plugins.base import Context, Example, Param, Technique, TechniqueError

#: Texts per importance batch: enough for stable scores, cheap on a CPU.
IMPORTANCE_BATCH_SIZE = 16
#: Where the importance pass ends and the pruning/recovery part of the progress bar begins.
SCORED = 0.4
PRUNED = 0.5
SHAPES_FORMAT = "roi-planner/pruned-shapes"


def _amount(what: str) -> Param:
    return Param(
        "amount",
        float,
        0.5,
        f"Share of the {what} removed, from 0.05 to 0.95.",
        minimum=0.05,
        maximum=0.95,
    )


def _importance_batches(default: int = 8) -> Param:
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


# --------------------------------------------------------------------------------------------------------
# Shared helpers


def _on_device(model: Any, ctx: Context) -> Any:
    return model.to(ctx.device).eval()


def _device_of(model: Any) -> Any:
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _max_length(ctx: Context, *models: Any) -> int:
    limits = [getattr(getattr(m, "config", None), "max_position_embeddings", None) for m in models]
    return min([ctx.max_length] + [n for n in limits if isinstance(n, int) and n > 0])


def _encode(
    tokenizer: Any, texts: Sequence[str], device: Any, max_length: int, *, causal: bool = False
) -> dict[str, Any]:
    """A batch for the model: padded by the tokenizer for a classifier; for a causal LM padded on the right
    by ``encode_causal_lm``, which needs no pad token."""
    if tokenizer is None:
        raise TechniqueError("This technique needs the model's tokenizer")
    if causal:
        from plugins.training import encode_causal_lm

        return encode_causal_lm(tokenizer, texts, max_length=max_length, device=device)
    encoded = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {k: v.to(device) for k, v in encoded.items()}


def _sample_batches(ctx: Context, batches: int, what: str) -> list[list[Example]]:
    """Up to ``batches`` batches of distinct training examples, drawn with ``ctx.seed``; never ``ctx.eval``."""
    examples = list(ctx.train)
    if not examples:
        raise TechniqueError(
            f"Scoring {what} needs training texts (labels are optional); the held-out evaluation data is "
            "never used for it. Give task data with enough examples for a training split."
        )
    picked = random.Random(ctx.seed).sample(examples, min(len(examples), batches * IMPORTANCE_BATCH_SIZE))
    return [picked[i : i + IMPORTANCE_BATCH_SIZE] for i in range(0, len(picked), IMPORTANCE_BATCH_SIZE)]


def _reference_logits(
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
    encoded = _encode(tokenizer, texts, _device_of(reference), max_length, causal=causal)
    if causal and inputs is not None:
        from plugins.training import same_tokens

        if not same_tokens(encoded, inputs):
            raise TechniqueError(
                "The model and the original teacher split the training texts into different tokens, so "
                "their next-token predictions cannot be compared; put vocabulary changes after pruning"
            )
    with torch.no_grad():
        logits = reference(**encoded, **_forward_kwargs(ctx)).logits
    return logits.float().to(_device_of(model))


def _forward_kwargs(ctx: Context) -> dict[str, Any]:
    """Extra forward arguments: a causal LM builds no key-value cache when scoring (nothing reuses it)."""
    return {"use_cache": False} if ctx.task == "causal-lm" else {}


class _Scored:
    """Student inputs and targets of the importance batches, computed once.

    Classification: ``targets`` are class ids (gold labels, else the teacher's predictions) and
    ``reference`` the teacher's logits per text. Causal LM: ``targets`` are the next-token labels of the
    text itself (``plugins.training.next_token_labels``), ``masks`` the non-padding positions, and
    ``reference`` the teacher's logits at those positions only, as (tokens, vocabulary); it is computed
    only with ``reference=True`` (layer dropping), since nothing else needs it and it is large.
    """

    def __init__(
        self, model: Any, ctx: Context, batches: list[list[Example]], *, reference: bool = True
    ) -> None:
        import torch

        from plugins.training import next_token_labels

        max_length = _max_length(ctx, model, *([ctx.teacher] if ctx.teacher is not None else []))
        device = _device_of(model)
        self.causal = ctx.task == "causal-lm"
        self.forward_kwargs = _forward_kwargs(ctx)
        label2id = {str(k): int(v) for k, v in (getattr(model.config, "label2id", None) or {}).items()}
        self.inputs: list[dict[str, Any]] = []
        self.reference: list[Any] = []
        self.targets: list[Any] = []
        self.masks: list[Any] = []
        for batch in batches:
            texts = [e.text for e in batch]
            inputs = _encode(ctx.tokenizer, texts, device, max_length, causal=self.causal)
            self.inputs.append(inputs)
            if self.causal:
                mask = inputs["attention_mask"].bool()
                self.masks.append(mask)
                self.targets.append(next_token_labels(inputs))
                if reference:
                    self.reference.append(_reference_logits(model, ctx, texts, max_length, inputs)[mask])
                continue
            reference_logits = _reference_logits(model, ctx, texts, max_length)
            self.masks.append(None)
            if reference:
                self.reference.append(reference_logits)
            # Gold labels where the model knows them, else the teacher's prediction. (A KL to the teacher's
            # soft targets would have a zero gradient here: the model starts as a copy of the teacher.)
            predicted = reference_logits.argmax(-1).tolist()
            self.targets.append(
                torch.tensor(
                    [
                        label2id.get(str(e.label), p) if e.label is not None else p
                        for e, p in zip(batch, predicted, strict=True)
                    ],
                    device=device,
                )
            )

    def loss(self, model: Any, index: int) -> Any | None:
        """The scoring loss of ``model`` on batch ``index``: cross-entropy to the targets (for a causal LM,
        next-token prediction on the text at its non-padding positions); None when the batch has no
        target (causal-LM texts one token long)."""
        import torch.nn.functional as F

        from plugins.training import next_token_loss

        logits = model(**self.inputs[index], **self.forward_kwargs).logits.float()
        if self.causal:
            return next_token_loss(logits, self.targets[index])
        return F.cross_entropy(logits, self.targets[index])


def _gate_importance(
    model: Any,
    scored: _Scored,
    gated: Sequence[tuple[Any, int, int]],
    report: Callable[[float, str], None],
    what: str,
) -> list[Any]:
    """Accumulated ``|∂L/∂g|`` of gates ``g`` (all ones, so the model is unchanged) that multiply groups of
    the input features of modules, per batch: for ``(module, units, width)`` the module's input is split into
    ``units`` groups of ``width`` features (an attention head's context vector; one FFN neuron). This is the
    head-mask gradient of Michel et al. (2019) and the first-order Taylor score ``|Σ activation × gradient|``
    of Molchanov et al. (2019), with the loss of ``_Scored`` (cross-entropy to gold or teacher labels; for a
    causal LM, next-token cross-entropy on the training text)."""
    import torch

    device = _device_of(model)
    gates = [torch.ones(units, device=device, requires_grad=True) for _, units, _ in gated]
    scores = [torch.zeros(units, dtype=torch.float64) for _, units, _ in gated]

    def hook_for(gate: Any, width: int) -> Callable[..., Any]:
        def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]
            grouped = x.reshape(*x.shape[:-1], gate.numel(), width) * gate.to(x.dtype).unsqueeze(-1)
            return (grouped.reshape(x.shape), *args[1:])

        return hook

    handles = [
        module.register_forward_pre_hook(hook_for(g, w))
        for (module, _, w), g in zip(gated, gates, strict=True)
    ]
    trainable = {p: p.requires_grad for p in model.parameters()}
    for p in trainable:
        p.requires_grad_(False)  # only the gates' gradients are needed
    model.eval()
    try:
        total = len(scored.inputs)
        for index in range(total):
            loss = scored.loss(model, index)
            if loss is not None:
                grads = torch.autograd.grad(loss, gates)
                for score, grad in zip(scores, grads, strict=True):
                    score += grad.detach().abs().double().cpu()
            report(SCORED * (index + 1) / total, f"scoring {what}: batch {index + 1}/{total}")
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in trainable.items():
            p.requires_grad_(flag)
    return [s.float() for s in scores]


def _slice_linear(linear: Any, index: Any, dim: int) -> Any:
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


def _blocks(model: Any, what: str) -> list[Any]:
    """The transformer blocks, checked to have the BERT layout that structured pruning edits."""
    import torch

    from plugins.training import transformer_layers

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


#: The feed-forward block of Llama-style decoders (Llama, Mistral, Qwen2, SmolLM2): down(act(gate(x)) * up(x))
GATED_MLP = ("gate_proj", "up_proj", "down_proj")


def _ffn_layers(model: Any, what: str) -> list[tuple[list[tuple[Any, str]], tuple[Any, str]]]:
    """Per transformer block, the Linear layers whose output rows are the feed-forward neurons (as
    (module, attribute) pairs) and the one whose input columns are: ``intermediate.dense`` and
    ``output.dense`` in a BERT-style encoder; ``mlp.gate_proj``, ``mlp.up_proj`` and ``mlp.down_proj`` in a
    Llama-style decoder."""
    import torch

    from plugins.training import transformer_layers

    parent, attr = transformer_layers(model)
    blocks = list(getattr(parent, attr))
    mlps = [getattr(block, "mlp", None) for block in blocks]
    if all(all(hasattr(mlp, name) for name in GATED_MLP) for mlp in mlps):
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
    return [([(block.intermediate, "dense")], (block.output, "dense")) for block in _blocks(model, what)]


def _recover(model: Any, ctx: Context, steps: int) -> Any:
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


def _causal_lm_refusal(refusal: str | None, task: str, why: str) -> str | None:
    """The base refusal, with the reason and the alternatives when the task is a causal LM."""
    if refusal and task == "causal-lm" and refusal.endswith(f"not {task}"):
        return f"{refusal}: {why}; for a causal LM use prune.layers, prune.ffn or distill.kd"
    return refusal


def _count(amount: float, total: int) -> int:
    """How many of ``total`` units ``amount`` removes: at least one."""
    return max(1, round(amount * total))


# --------------------------------------------------------------------------------------------------------
# Shapes a config cannot describe (heads pruned unevenly)


def pruned_shapes(model: Any) -> dict[str, Any] | None:
    """What of ``model`` differs in shape from the model its config builds, JSON-serialisable, or None.

    ``{"format": ..., "linear": {name: {"in_features", "out_features", "bias"}}, "attention": {name:
    {"num_attention_heads", "all_head_size"}}}``. Works on dynamically quantized models too (their Linear
    layers keep ``in_features``/``out_features``). Store it beside the weights and give it to
    ``apply_pruned_shapes`` on a ``from_config`` model before ``load_state_dict``.
    """
    import copy

    import torch

    with torch.device("meta"):
        reference = type(model)(copy.deepcopy(model.config))
    expected = dict(reference.named_modules())
    linear: dict[str, dict[str, Any]] = {}
    attention: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        ref = expected.get(name)
        if ref is None:
            continue
        if isinstance(ref, torch.nn.Linear) and isinstance(getattr(module, "in_features", None), int):
            shape = {"in_features": int(module.in_features), "out_features": int(module.out_features)}
            if (shape["in_features"], shape["out_features"]) != (ref.in_features, ref.out_features):
                linear[name] = {**shape, "bias": ref.bias is not None}
        changed = {
            attr: int(getattr(module, attr))
            for attr in ("num_attention_heads", "all_head_size")
            if isinstance(getattr(ref, attr, None), int) and getattr(module, attr, None) != getattr(ref, attr)
        }
        if changed:
            attention[name] = changed
    if not linear and not attention:
        return None
    return {"format": SHAPES_FORMAT, "linear": linear, "attention": attention}


def apply_pruned_shapes(model: Any, shapes: Mapping[str, Any] | None) -> None:
    """Rebuild the Linear layers and attention attributes listed by ``pruned_shapes`` on ``model`` (freshly
    built from the config), so that the pruned state dict fits ``load_state_dict``. New layers are
    uninitialised-then-overwritten: load the weights right after."""
    import torch

    if not shapes:
        return
    if shapes.get("format") != SHAPES_FORMAT:
        raise ValueError(f"unknown pruned-shapes format {shapes.get('format')!r}")
    for name, spec in shapes.get("linear", {}).items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        weight = getattr(old, "weight", None)
        factory = {"device": weight.device, "dtype": weight.dtype} if isinstance(weight, torch.Tensor) else {}
        setattr(
            parent,
            attr,
            torch.nn.Linear(
                int(spec["in_features"]), int(spec["out_features"]), bias=bool(spec["bias"]), **factory
            ),
        )
    for name, attrs in shapes.get("attention", {}).items():
        module = model.get_submodule(name)
        for attr, value in attrs.items():
            setattr(module, attr, int(value))


# --------------------------------------------------------------------------------------------------------
# Techniques


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
    params = (_amount("transformer layers' Linear weights set to zero"),)
    speedup_caveat = (
        "unstructured sparsity: the zeros are still stored and multiplied on dense kernels, so the model is "
        "neither smaller nor faster"
    )

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import torch
        from torch.nn.utils import prune

        from plugins.training import transformer_layers

        model = _on_device(model, ctx)
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
    params = (_amount("attention heads"), _importance_batches(), RECOVERY)

    @classmethod
    def refusal(cls, *, device: str, task: str) -> str | None:
        return _causal_lm_refusal(
            super().refusal(device=device, task=task),
            task,
            "it edits BERT-style attention, not a decoder's grouped-query attention",
        )

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import torch

        refusal = self.refusal(device=ctx.device, task=ctx.task)
        if refusal:
            raise TechniqueError(refusal)
        model = _on_device(model, ctx)
        blocks = _blocks(model, "Head pruning")
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
        remove = min(_count(params["amount"], total), removable)

        batches = _sample_batches(ctx, params["importance_batches"], "attention heads")
        ctx.report(0.0, f"scoring {total} attention heads on {len(batches)} training batches")
        scored = _Scored(model, ctx, batches, reference=False)
        scores = _gate_importance(
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
                setattr(self_attention, proj, _slice_linear(getattr(self_attention, proj), index, 0))
            block.attention.output.dense = _slice_linear(block.attention.output.dense, index, 1)
            self_attention.num_attention_heads = len(kept)
            self_attention.all_head_size = len(kept) * width
        ctx.notes["heads removed"] = f"{remove} of {total}"
        ctx.notes["heads kept per layer"] = ", ".join(str(n) for n in left)
        ctx.notes["removed heads (layer: heads)"] = "; ".join(
            f"{layer}: {','.join(map(str, sorted(gone)))}" for layer, gone in enumerate(dropped) if gone
        )
        ctx.report(PRUNED, "heads removed")
        return _recover(model, ctx, params["recovery_steps"])


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
    params = (_amount("feed-forward neurons of each layer"), _importance_batches(), RECOVERY)

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import torch

        model = _on_device(model, ctx)
        layers = _ffn_layers(model, "Feed-forward pruning")
        sizes = {getattr(*cols).in_features for _, cols in layers}
        if len(sizes) != 1:
            raise TechniqueError(
                f"The layers' feed-forward widths differ ({', '.join(map(str, sorted(sizes)))}); this "
                "technique needs them equal"
            )
        size = sizes.pop()
        kept_count = size - _count(params["amount"], size)
        if kept_count < 1:
            raise TechniqueError(f"The feed-forward layers have {size} neurons: there is nothing to prune")

        batches = _sample_batches(ctx, params["importance_batches"], "feed-forward neurons")
        ctx.report(0.0, f"scoring {size} feed-forward neurons per layer on {len(batches)} training batches")
        scored = _Scored(model, ctx, batches, reference=False)
        scores = _gate_importance(
            model, scored, [(getattr(*cols), size, 1) for _, cols in layers], ctx.report, "neurons"
        )

        ctx.report(SCORED, f"keeping {kept_count} of {size} neurons per layer")
        for (rows, (owner, attr)), score in zip(layers, scores, strict=True):
            # Stable ranking: ties (e.g. dead neurons) go by position.
            order = sorted(range(size), key=lambda j, s=score: (-float(s[j]), j))
            index = torch.tensor(sorted(order[:kept_count]))
            for row_module, row_attr in rows:
                setattr(row_module, row_attr, _slice_linear(getattr(row_module, row_attr), index, 0))
            setattr(owner, attr, _slice_linear(getattr(owner, attr), index, 1))
            if isinstance(getattr(owner, "intermediate_size", None), int):  # LlamaMLP records its width
                owner.intermediate_size = kept_count
        model.config.intermediate_size = kept_count
        ctx.notes["feed-forward neurons per layer"] = f"{kept_count} of {size}"
        ctx.report(PRUNED, "neurons removed")
        return _recover(model, ctx, params["recovery_steps"])


def _parse_pattern(pattern: str) -> list[int]:
    try:
        indices = [int(part) for part in pattern.replace(" ", "").split(",") if part]
    except ValueError:
        raise TechniqueError(
            f"pattern {pattern!r} is not a comma-separated list of layer numbers, e.g. 0,2,4"
        ) from None
    if not indices:
        raise TechniqueError("strategy=pattern needs a pattern: the layers to keep, e.g. 0,2,4")
    if len(set(indices)) != len(indices):
        raise TechniqueError(f"pattern {pattern!r} lists a layer twice")
    if min(indices) < 0:
        raise TechniqueError(f"pattern {pattern!r}: layer numbers start at 0")
    return sorted(indices)


def layers_to_keep(strategy: str, total: int, keep: int) -> list[int]:
    """The layers (0-based) that the fixed strategies of Sajjad et al. keep: ``top`` drops the last layers,
    ``bottom`` the first ones, ``alternate`` every other layer from the top down (for 6 keeping 3: 1, 3, 5),
    then the remaining ones from the top when more must go."""
    if strategy == "top":
        return list(range(keep))
    if strategy == "bottom":
        return list(range(total - keep, total))
    if strategy == "alternate":
        order = list(range(total - 2, -1, -2)) + list(range(total - 1, -1, -2))
        drop = set(order[: total - keep])
        return [i for i in range(total) if i not in drop]
    raise TechniqueError(f"unknown layer-dropping strategy {strategy!r}")


class LayerDropping(Technique):
    """Drops whole transformer layers: the kept layers stay as they are, the others are removed physically
    and the config's layer count is updated, so the result saves like any model.

    Source: Sajjad et al. 2020, "On the Effect of Dropping Layers of Pre-trained Transformer Models". The
    strategies are theirs: ``top`` drops the layers nearest the output (their most robust choice),
    ``bottom`` those nearest the embeddings, ``alternate`` every other layer from the top down;
    ``importance`` greedily drops, one at a time, the layer whose removal changes the teacher's predictions
    least (KL divergence on a few training batches); ``pattern`` keeps the listed layers.

    Causal LMs lose layers the same way (Men et al. 2024, "ShortGPT: Layers in Large Language Models are
    More Redundant Than You Expect", show how many decoder layers can go; they score a layer by how little it
    changes its input). Here the ``importance`` KL compares the next-token distributions at every token of
    the training texts, averaged over the tokens.
    """

    name = "prune.layers"
    title = "Layer dropping"
    family = "prune"
    tasks = ("sequence-classification", "causal-lm")
    params = (
        Param("keep", int, 3, "How many transformer layers to keep (ignored with strategy=pattern).", 1, 48),
        Param(
            "strategy",
            str,
            "importance",
            "Which layers go: importance = greedily the least useful on training data; top = the last "
            "layers; bottom = the first layers; alternate = every other layer from the top; pattern = keep "
            "the layers listed in pattern.",
            choices=("importance", "top", "bottom", "alternate", "pattern"),
        ),
        Param("pattern", str, "", "With strategy=pattern: the layers to keep, numbered from 0, e.g. 0,2,4."),
        _importance_batches(4),
        RECOVERY,
    )

    @classmethod
    def check(cls, params: Mapping[str, Any], *, device: str, task: str) -> str | None:
        pattern = str(params.get("pattern") or "").strip()
        if params.get("strategy") == "pattern":
            try:
                _parse_pattern(pattern)
            except TechniqueError as exc:
                return str(exc)
        elif pattern:
            return "pattern is only used with strategy=pattern; clear it or choose that strategy"
        return None

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        from plugins.training import keep_layers, layer_count

        refusal = self.check(params, device=ctx.device, task=ctx.task)
        if refusal:
            raise TechniqueError(refusal)
        model = _on_device(model, ctx)
        total = layer_count(model)
        strategy = params["strategy"]
        if strategy == "pattern":
            kept = _parse_pattern(params["pattern"])
            if max(kept) >= total:
                raise TechniqueError(
                    f"pattern lists layer {max(kept)}, but the model has {total} layers, numbered 0 to {total - 1}"
                )
            if len(kept) >= total:
                raise TechniqueError(f"pattern keeps all {total} layers: list fewer to drop some")
        else:
            keep = int(params["keep"])
            if keep >= total:
                raise TechniqueError(
                    f"keep={keep} would keep every layer: the model has {total}; choose fewer than {total}"
                )
            if strategy == "importance":
                kept = self._greedy(model, ctx, keep, params["importance_batches"])
            else:
                kept = layers_to_keep(strategy, total, keep)
        ctx.report(SCORED, f"keeping layers {', '.join(map(str, kept))} of {total}")
        model = keep_layers(model, kept, inplace=True)
        ctx.notes["layers kept"] = f"{', '.join(map(str, kept))} (of 0 to {total - 1})"
        ctx.notes["layers"] = f"{len(kept)} of {total}"
        ctx.report(PRUNED, "layers dropped")
        return _recover(model, ctx, params["recovery_steps"])

    @staticmethod
    def _greedy(model: Any, ctx: Context, keep: int, batches: int) -> list[int]:
        import torch
        import torch.nn.functional as F

        from plugins.training import transformer_layers

        scored = _Scored(model, ctx, _sample_batches(ctx, batches, "layers"), reference=True)
        parent, attr = transformer_layers(model)
        original = getattr(parent, attr)
        current = list(range(len(original)))
        steps = len(current) - keep
        trials = sum(len(current) - i for i in range(steps))
        done = 0
        order: list[str] = []
        try:
            while len(current) > keep:
                best: tuple[float, int] | None = None
                for layer in current:
                    setattr(parent, attr, torch.nn.ModuleList([original[i] for i in current if i != layer]))
                    divergence = 0.0
                    with torch.no_grad():
                        for inputs, reference, mask in zip(
                            scored.inputs, scored.reference, scored.masks, strict=True
                        ):
                            logits = model(**inputs, **scored.forward_kwargs).logits.float()
                            if mask is not None:  # a causal LM: every non-padding token's next-token KL
                                logits = logits[mask]
                            divergence += float(
                                F.kl_div(
                                    F.log_softmax(logits, -1),
                                    F.log_softmax(reference, -1),
                                    log_target=True,
                                    reduction="sum",
                                )
                            )
                    # Mean per text (classifier) or per token (causal LM): the rows of the references.
                    divergence /= sum(r.shape[0] for r in scored.reference)
                    if best is None or divergence < best[0]:
                        best = (divergence, layer)
                    done += 1
                    ctx.report(SCORED * done / trials, f"scoring layers: trial {done}/{trials}")
                assert best is not None
                current.remove(best[1])
                order.append(f"{best[1]} (KL {best[0]:.4g})")
        finally:
            setattr(parent, attr, original)
        ctx.notes["drop order"] = ", ".join(order)
        return current


class VocabularyPruning(Technique):
    """Trims the vocabulary to the tokens the training texts use: the word-embedding matrix keeps only
    those rows (plus every special and added token), and a new tokenizer with the trimmed vocabulary
    replaces the model's; texts that use other tokens read them as ``[UNK]``.

    Source: Abdaoui et al. 2020, "Load What You Need: Smaller Versions of Multilingual BERT". Texts whose
    tokens were all kept give exactly the original outputs. Only WordPiece and WordLevel tokenizers (BERT
    family) are supported; the vocabulary comes from ``ctx.train`` only, never the evaluation data.

    Sequence classification only. For a causal LM the vocabulary is also the output: trimming the LM head
    would change the next-token distribution itself (tokens outside the training texts could never be
    generated, and perplexity would no longer be comparable with the original model's).
    """

    name = "prune.vocabulary"
    title = "Vocabulary pruning"
    family = "prune"
    params = (
        Param(
            "min_count",
            int,
            1,
            "Keep a token only if the training texts use it at least this many times; rarer ones become "
            "[UNK] (special tokens are always kept).",
            minimum=1,
            maximum=1000,
        ),
    )
    speedup_caveat = (
        "only the embedding table shrinks: the model is smaller on disk and in memory, but looking up a "
        "token costs the same, so it is no faster"
    )

    @classmethod
    def refusal(cls, *, device: str, task: str) -> str | None:
        return _causal_lm_refusal(
            super().refusal(device=device, task=task),
            task,
            "a causal LM's vocabulary is also its output, so trimming it would change what the model can "
            "generate and its perplexity",
        )

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import collections

        import torch

        refusal = self.refusal(device=ctx.device, task=ctx.task)
        if refusal:
            raise TechniqueError(refusal)
        tokenizer = ctx.tokenizer
        if (
            tokenizer is None
            or not getattr(tokenizer, "is_fast", False)
            or not hasattr(tokenizer, "backend_tokenizer")
        ):
            raise TechniqueError(
                f"Vocabulary pruning needs a fast (tokenizers-backed) tokenizer; "
                f"{type(tokenizer).__name__} is not one"
            )
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        kind = spec.get("model", {}).get("type")
        vocab = spec.get("model", {}).get("vocab")
        if kind not in ("WordPiece", "WordLevel") or not isinstance(vocab, dict):
            raise TechniqueError(
                f"Vocabulary pruning supports WordPiece and WordLevel tokenizers (BERT family); "
                f"{type(tokenizer).__name__} uses {kind or 'an unknown model'}, whose vocabulary cannot be "
                "cut without retokenizing differently"
            )
        embeddings = model.get_input_embeddings()
        if not isinstance(embeddings, torch.nn.Embedding):
            raise TechniqueError(
                f"The model's input embeddings are {type(embeddings).__name__}, not an Embedding"
            )
        rows = embeddings.num_embeddings
        texts = [e.text for e in ctx.train]  # never ctx.eval
        if not texts:
            raise TechniqueError("Vocabulary pruning needs training texts to learn which tokens are used")

        ctx.report(0.0, f"counting tokens in {len(texts)} training texts")
        counts: collections.Counter[int] = collections.Counter()
        for start in range(0, len(texts), 256):
            encoded = tokenizer(texts[start : start + 256], add_special_tokens=False)["input_ids"]
            for ids in encoded:
                counts.update(ids)
        keep = {i for i, n in counts.items() if n >= params["min_count"]}
        keep |= {int(t["id"]) for t in spec.get("added_tokens", [])}
        keep |= {int(i) for i in tokenizer.all_special_ids}
        unk = spec["model"].get("unk_token")
        if unk is not None and unk in vocab:
            keep.add(int(vocab[unk]))
        config = model.config
        token_attrs = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")
        keep |= {v for a in token_attrs if isinstance(v := getattr(config, a, None), int) and 0 <= v < rows}
        kept = sorted(i for i in keep if 0 <= i < rows)
        if len(kept) < len(keep):
            raise TechniqueError(
                f"The tokenizer has ids up to {max(keep)}, but the model has only {rows} embeddings"
            )
        old_to_new = {old: new for new, old in enumerate(kept)}

        ctx.report(0.3, f"keeping {len(kept)} of {rows} tokens")
        new_tokenizer = _trimmed_tokenizer(tokenizer, spec, old_to_new)
        _check_same_tokens(tokenizer, new_tokenizer, texts, old_to_new)

        index = torch.tensor(kept, device=embeddings.weight.device)
        pad = getattr(config, "pad_token_id", None)
        trimmed = torch.nn.Embedding(
            len(kept),
            embeddings.embedding_dim,
            padding_idx=old_to_new.get(pad) if isinstance(pad, int) else None,
            device=embeddings.weight.device,
            dtype=embeddings.weight.dtype,
        )
        with torch.no_grad():
            trimmed.weight.copy_(embeddings.weight.detach().index_select(0, index))
        output = model.get_output_embeddings()
        model.set_input_embeddings(trimmed)
        if output is not None:
            if output.weight is embeddings.weight:
                output.weight = trimmed.weight
            else:
                output.weight = torch.nn.Parameter(output.weight.detach().index_select(0, index).clone())
            if getattr(output, "bias", None) is not None and output.bias.shape[0] == rows:
                output.bias = torch.nn.Parameter(output.bias.detach().index_select(0, index).clone())
            if hasattr(output, "out_features"):
                output.out_features = len(kept)
        config.vocab_size = len(kept)
        for attr in token_attrs:
            value = getattr(config, attr, None)
            if isinstance(value, int) and value in old_to_new:
                setattr(config, attr, old_to_new[value])

        ctx.tokenizer = new_tokenizer
        ctx.notes["vocabulary kept"] = len(kept)
        ctx.notes["vocabulary original"] = rows
        ctx.notes["embedding parameters removed"] = (rows - len(kept)) * embeddings.embedding_dim
        ctx.report(1.0, f"vocabulary trimmed to {len(kept)} of {rows} tokens")
        return model


def _remap_processor(processor: Any, old_to_new: Mapping[int, int]) -> None:
    """Rewrite the special-token ids of a tokenizers post-processor (JSON form) in place."""
    if not isinstance(processor, dict):
        return
    kind = processor.get("type")
    if kind == "TemplateProcessing":
        for token in processor.get("special_tokens", {}).values():
            token["ids"] = [old_to_new[int(i)] for i in token["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            if key in processor:
                processor[key] = [processor[key][0], old_to_new[int(processor[key][1])]]
    elif kind == "Sequence":
        for inner in processor.get("processors", []):
            _remap_processor(inner, old_to_new)


def _trimmed_tokenizer(tokenizer: Any, spec: dict[str, Any], old_to_new: Mapping[int, int]) -> Any:
    """The same tokenizer with only the tokens of ``old_to_new`` (renumbered); same class, normaliser and
    special tokens, so it round-trips through ``save_pretrained``/``AutoTokenizer.from_pretrained``."""
    from tokenizers import Tokenizer

    spec = json.loads(json.dumps(spec))
    spec["model"]["vocab"] = {
        token: old_to_new[int(i)]
        for token, i in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
        if int(i) in old_to_new
    }
    spec["added_tokens"] = [{**t, "id": old_to_new[int(t["id"])]} for t in spec.get("added_tokens", [])]
    _remap_processor(spec.get("post_processor"), old_to_new)
    if isinstance(spec.get("padding"), dict) and "pad_id" in spec["padding"]:
        spec["padding"]["pad_id"] = old_to_new.get(int(spec["padding"]["pad_id"]), 0)
    backend = Tokenizer.from_str(json.dumps(spec))
    dropped = {
        "vocab",
        "vocab_file",
        "merges",
        "merges_file",
        "tokenizer_file",
        "tokenizer_object",
        "added_tokens_decoder",
        "name_or_path",
        "is_local",
        "local_files_only",
        "special_tokens_map_file",
        "_commit_hash",
    }
    kwargs = {k: v for k, v in tokenizer.init_kwargs.items() if k not in dropped}
    try:
        return type(tokenizer)(tokenizer_object=backend, **kwargs)
    except Exception as exc:  # a tokenizer class that cannot be rebuilt this way
        raise TechniqueError(
            f"Cannot rebuild {type(tokenizer).__name__} with a trimmed vocabulary ({exc}); vocabulary pruning "
            "supports BERT-style WordPiece tokenizers"
        ) from exc


def _check_same_tokens(old: Any, new: Any, texts: Sequence[str], old_to_new: Mapping[int, int]) -> None:
    """On a sample of the training texts whose tokens were all kept, the new tokenizer must give the same
    tokens renumbered; anything else means this tokenizer cannot be trimmed this way."""
    sample = list(texts[:64])
    before = old(sample)["input_ids"]
    after = new(sample)["input_ids"]
    for text, a, b in zip(sample, before, after, strict=True):
        if all(i in old_to_new for i in a) and [old_to_new[i] for i in a] != list(b):
            raise TechniqueError(
                f"The trimmed {type(old).__name__} splits {text[:60]!r} differently from the original; "
                "vocabulary pruning does not support this tokenizer"
            )
