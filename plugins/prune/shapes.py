"""Layer shapes a transformers config cannot describe: attention heads pruned unevenly across layers.

A config's head size is ``hidden_size / num_attention_heads`` for every layer, and transformers 5 dropped
``config.pruned_heads``, so ``pruned_shapes`` describes those shapes and ``apply_pruned_shapes`` rebuilds
them; ``PRUNED_SHAPES`` is the layout (``plugins.formats``) that keeps them in the manifest of a saved model,
whatever its format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugins.formats import Layout

SHAPES_FORMAT = "roi-planner/pruned-shapes"


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


PRUNED_SHAPES = Layout("pruned_shapes", describe=pruned_shapes, rebuild=apply_pruned_shapes)
