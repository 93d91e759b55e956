"""Importance scores of groups of features (attention heads, feed-forward neurons) from the gradient of a
loss on a few training batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from plugins.base import Context, Example
from plugins.prune.common import SCORED, device_of, encode, forward_kwargs, max_length_for, reference_logits


class Scored:
    """Student inputs and targets of the importance batches, computed once.

    Classification: ``targets`` are class ids (gold labels, else the teacher's predictions) and
    ``reference`` the teacher's logits per text. Causal LM: ``targets`` are the next-token labels of the
    text itself (``plugins.causal_lm.next_token_labels``), ``masks`` the non-padding positions, and
    ``reference`` the teacher's logits at those positions only, as (tokens, vocabulary); it is computed
    only with ``reference=True`` (layer dropping), since nothing else needs it and it is large.
    """

    def __init__(
        self, model: Any, ctx: Context, batches: list[list[Example]], *, reference: bool = True
    ) -> None:
        import torch

        from plugins.causal_lm import next_token_labels

        max_length = max_length_for(ctx, model, *([ctx.teacher] if ctx.teacher is not None else []))
        device = device_of(model)
        self.causal = ctx.task == "causal-lm"
        self.forward_kwargs = forward_kwargs(ctx)
        label2id = {str(k): int(v) for k, v in (getattr(model.config, "label2id", None) or {}).items()}
        self.inputs: list[dict[str, Any]] = []
        self.reference: list[Any] = []
        self.targets: list[Any] = []
        self.masks: list[Any] = []
        for batch in batches:
            texts = [e.text for e in batch]
            inputs = encode(ctx.tokenizer, texts, device, max_length, causal=self.causal)
            self.inputs.append(inputs)
            if self.causal:
                mask = inputs["attention_mask"].bool()
                self.masks.append(mask)
                self.targets.append(next_token_labels(inputs))
                if reference:
                    self.reference.append(reference_logits(model, ctx, texts, max_length, inputs)[mask])
                continue
            teacher_logits = reference_logits(model, ctx, texts, max_length)
            self.masks.append(None)
            if reference:
                self.reference.append(teacher_logits)
            # Gold labels where the model knows them, else the teacher's prediction. (A KL to the teacher's
            # soft targets would have a zero gradient here: the model starts as a copy of the teacher.)
            predicted = teacher_logits.argmax(-1).tolist()
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

        from plugins.causal_lm import next_token_loss

        logits = model(**self.inputs[index], **self.forward_kwargs).logits.float()
        if self.causal:
            return next_token_loss(logits, self.targets[index])
        return F.cross_entropy(logits, self.targets[index])


def gate_importance(
    model: Any,
    scored: Scored,
    gated: Sequence[tuple[Any, int, int]],
    report: Callable[[float, str], None],
    what: str,
) -> list[Any]:
    """Accumulated ``|∂L/∂g|`` of gates ``g`` (all ones, so the model is unchanged) that multiply groups of
    the input features of modules, per batch: for ``(module, units, width)`` the module's input is split into
    ``units`` groups of ``width`` features (an attention head's context vector; one FFN neuron). This is the
    head-mask gradient of Michel et al. (2019) and the first-order Taylor score ``|Σ activation × gradient|``
    of Molchanov et al. (2019), with the loss of ``Scored`` (cross-entropy to gold or teacher labels; for a
    causal LM, next-token cross-entropy on the training text)."""
    import torch

    device = device_of(model)
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
