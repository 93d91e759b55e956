"""Layer dropping: fixed strategies, a pattern, or greedy by importance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from plugins.base import Context, Param, ParamError, Technique, TechniqueError
from plugins.layers import check_layers_exist, parse_layer_list
from plugins.prune.common import (
    PRUNED,
    RECOVERY,
    SCORED,
    importance_batches_param,
    on_device,
    recover,
    sample_batches,
)
from plugins.prune.importance import Scored

if TYPE_CHECKING:
    from plugins.model_info import ModelInfo


def _parse_pattern(pattern: str) -> list[int]:
    try:
        indices = parse_layer_list(pattern, name="pattern")
    except TechniqueError as exc:
        if "comma-separated" in str(exc):
            raise TechniqueError(
                f"pattern {pattern[:200]!r} is not a comma-separated list of layer numbers, e.g. 0,2,4"
            ) from None
        raise
    if not indices:
        raise TechniqueError("strategy=pattern needs a pattern: the layers to keep, e.g. 0,2,4")
    return sorted(indices)


def kept_count_problem(params: Mapping[str, Any], total: int) -> str | None:
    """Why ``keep`` or ``pattern`` (already checked by ``LayerDropping.check``) cannot work on a model
    of ``total`` layers, or None."""
    if params["strategy"] == "pattern":
        kept = _parse_pattern(params["pattern"])
        try:
            check_layers_exist(kept, total, name="pattern")
        except TechniqueError as exc:
            return str(exc)
        if len(kept) >= total:
            return f"pattern keeps all {total} layers: list fewer to drop some"
        return None
    keep = int(params["keep"])
    if keep >= total:
        return f"keep={keep} would keep every layer: the model has {total}; choose fewer than {total}"
    return None


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
        importance_batches_param(4),
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

    @classmethod
    def check_for_model(cls, params: Mapping[str, Any], model_info: ModelInfo) -> None:
        problem = kept_count_problem(params, model_info.layers)
        if problem:
            raise ParamError(problem)

    @classmethod
    def model_after(cls, params: Mapping[str, Any], model_info: ModelInfo) -> ModelInfo:
        if params["strategy"] == "pattern":
            return model_info.with_layers(len(_parse_pattern(params["pattern"])))
        return model_info.with_layers(int(params["keep"]))

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        from plugins.layers import keep_layers, layer_count

        refusal = self.check(params, device=ctx.device, task=ctx.task)
        if refusal:
            raise TechniqueError(refusal)
        model = on_device(model, ctx)
        total = layer_count(model)
        strategy = params["strategy"]
        problem = kept_count_problem(params, total)
        if problem:
            raise TechniqueError(problem)
        if strategy == "pattern":
            kept = _parse_pattern(params["pattern"])
        else:
            keep = int(params["keep"])
            if strategy == "importance":
                kept = self._greedy(model, ctx, keep, params["importance_batches"])
            else:
                kept = layers_to_keep(strategy, total, keep)
        ctx.report(SCORED, f"keeping layers {', '.join(map(str, kept))} of {total}")
        model = keep_layers(model, kept, inplace=True)
        ctx.notes["layers kept"] = f"{', '.join(map(str, kept))} (of 0 to {total - 1})"
        ctx.notes["layers"] = f"{len(kept)} of {total}"
        ctx.report(PRUNED, "layers dropped")
        return recover(model, ctx, params["recovery_steps"])

    @staticmethod
    def _greedy(model: Any, ctx: Context, keep: int, batches: int) -> list[int]:
        import torch
        import torch.nn.functional as F

        from plugins.layers import transformer_layers

        scored = Scored(model, ctx, sample_batches(ctx, batches, "layers"), reference=True)
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
