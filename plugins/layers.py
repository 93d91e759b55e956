"""Finding and cutting the stack of transformer blocks, so that distillation and structured pruning share one
implementation: ``transformer_layers`` finds the blocks, ``keep_layers`` keeps some of them and updates the
config so that the result saves and reloads like any transformers model.

Heavy imports (torch) happen inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from plugins.base import TechniqueError

#: Where transformer blocks live, relative to ``model.base_model`` (then to ``model``): BERT/RoBERTa/ELECTRA,
#: DistilBERT, Llama-style decoders (base model, then the causal-LM wrapper), GPT-2, BART-style decoders.
LAYER_PATHS = ("encoder.layer", "transformer.layer", "layers", "model.layers", "h", "transformer.h")
#: Config attributes that may hold the number of blocks (aliases map onto each other in transformers).
LAYER_COUNT_ATTRS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers")


#: The longest layer list a parameter may give: as many layers as a student or a pruned model may keep.
MAX_LISTED_LAYERS = 48


def parse_layer_list(text: str, *, name: str) -> list[int]:
    """``"0, 2,4"`` → ``[0, 2, 4]``, in the given order. TechniqueError, naming the parameter ``name``, for
    anything but a comma list of layer numbers (ASCII digits, from 0), a number listed twice, or more than
    MAX_LISTED_LAYERS numbers. Whether the layers exist is the model's to say (``check_layers_exist``)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if len(parts) > MAX_LISTED_LAYERS:
        raise TechniqueError(f"{name} lists {len(parts)} layers; list at most {MAX_LISTED_LAYERS}")
    for part in parts:
        if re.fullmatch(r"-[0-9]+", part):
            raise TechniqueError(f"{name} {text[:200]!r}: layer numbers start at 0")
        if not re.fullmatch(r"[0-9]{1,6}", part):
            raise TechniqueError(
                f"{name} must be a comma-separated list of layer numbers such as 0,2,4; got {text[:200]!r}"
            )
    indices = [int(part) for part in parts]
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise TechniqueError(
            f"{name} {text[:200]!r} lists a layer twice ({', '.join(map(str, repeated))}); list each layer once"
        )
    return indices


def check_layers_exist(indices: Sequence[int], total: int, *, name: str) -> None:
    """TechniqueError when ``indices`` name a layer a model of ``total`` layers does not have."""
    missing = [i for i in indices if not 0 <= i < total]
    if missing:
        which = "layer {}, which does" if len(missing) == 1 else "layers {}, which do"
        raise TechniqueError(
            f"{name} lists {which.format(', '.join(map(str, missing[:10])))} not exist: the model has "
            f"{total} layers, numbered 0 to {total - 1}"
        )


def transformer_layers(model: Any) -> tuple[Any, str]:
    """The module holding the ``ModuleList`` of transformer blocks and that attribute's name.

    Knows ``encoder.layer`` (BERT, RoBERTa), ``transformer.layer`` (DistilBERT), ``layers`` /
    ``model.layers`` (Llama and other decoders) and ``h`` (GPT-2); looks under ``model.base_model`` first.
    """
    import torch

    roots = [getattr(model, "base_model", None), model]
    for root in roots:
        if root is None:
            continue
        for path in LAYER_PATHS:
            *parents, attr = path.split(".")
            parent = root
            for name in parents:
                parent = getattr(parent, name, None)
                if parent is None:
                    break
            if parent is None:
                continue
            layers = getattr(parent, attr, None)
            if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
                return parent, attr
    raise TechniqueError(
        f"Cannot find the transformer blocks of {type(model).__name__}: expected a ModuleList at one of "
        f"{', '.join(LAYER_PATHS)}"
    )


def layer_count(model: Any) -> int:
    parent, attr = transformer_layers(model)
    return len(getattr(parent, attr))


def evenly_spaced(count: int, total: int) -> list[int]:
    """``count`` of ``total`` layer indices, first and last included when count > 1: for 6 of 12 this gives
    0, 2, 4, 7, 9, 11, the layers DistilBERT's extraction script keeps."""
    if count <= 1:
        return [0]
    return [int(i * (total - 1) / (count - 1) + 0.5) for i in range(count)]


def keep_layers(model: Any, indices: Sequence[int], *, inplace: bool = False) -> Any:
    """The model with only the transformer blocks at ``indices`` (0-based, in order), the others removed.

    The config's layer count (and ``layer_types`` where a config has it) is updated and each kept block's
    ``layer_idx`` renumbered, so ``save_pretrained``/``from_pretrained`` round-trip with no custom format.
    By default the input stays intact and a copy is returned; the dropped blocks are never copied.
    ``inplace=True`` cuts the given model instead (less memory when the caller owns it).
    """
    import torch

    parent, attr = transformer_layers(model)
    layers = getattr(parent, attr)
    total = len(layers)
    kept = [int(i) for i in indices]
    if not kept:
        raise TechniqueError("Keep at least one transformer layer")
    bad = [i for i in kept if not 0 <= i < total]
    if bad:
        raise TechniqueError(
            f"Layer indices {', '.join(map(str, bad))} do not exist: the model has {total} layers, "
            f"numbered 0 to {total - 1}"
        )
    if len(set(kept)) != len(kept):
        raise TechniqueError(f"Layer indices repeat: {', '.join(map(str, kept))}; list each layer once")
    kept = sorted(kept)

    if not inplace:
        # Pre-seeding the memo makes deepcopy skip the dropped blocks (they become None in the copy's list,
        # which is replaced right below): copying a 12-layer teacher to keep 2 copies 2 layers.
        memo: dict[int, Any] = {id(layer): None for i, layer in enumerate(layers) if i not in kept}
        model = copy.deepcopy(model, memo)
        parent, attr = transformer_layers(model)
        layers = getattr(parent, attr)
    setattr(parent, attr, torch.nn.ModuleList([layers[i] for i in kept]))

    for new_index, layer in enumerate(getattr(parent, attr)):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    candidates = (getattr(model, "config", None), getattr(parent, "config", None))
    configs = {id(c): c for c in candidates if c is not None}
    for config in configs.values():
        for name in LAYER_COUNT_ATTRS:
            if getattr(config, name, None) == total:
                setattr(config, name, len(kept))
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, list | tuple) and len(layer_types) == total:
            config.layer_types = [layer_types[i] for i in kept]
    return model
