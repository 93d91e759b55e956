"""What a model directory says about the model, read from its files without torch or transformers.

``ModelInfo`` is what the model-aware parameter checks of the techniques need (layer count, sizes, task),
built from config.json. ``check_config`` refuses a config whose sizes are not positive whole numbers
within sane maxima, or whose ``architectures`` is not a list of names. ``read_weights`` reads the
safetensors headers (an 8-byte little-endian length, then a JSON header naming each tensor's dtype, shape
and byte range) of a single file or of the shards an index names. ``check_weights`` compares the size the
config describes with the size the weights hold, and both with a byte limit, so a config that describes
an enormous model beside a tiny weights file is refused before anything builds it.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


class ModelLoadError(Exception):
    """The model directory cannot be loaded safely; the message says why and what to do."""


@dataclass(frozen=True)
class Dimension:
    """A size a config.json may give, under any of its ``names``; ``required`` ones must be there."""

    what: str
    names: tuple[str, ...]
    maximum: int
    required: bool = False


#: The sizes this tool reads from a config, with maxima well above any released model's (the largest have
#: about 130 layers, a hidden size of 16,384, a vocabulary of 262,144 and a feed-forward size of 53,248).
DIMENSIONS = (
    Dimension(
        "layer count",
        ("num_hidden_layers", "n_layers", "n_layer", "num_layers", "encoder_layers"),
        1024,
        required=True,
    ),
    Dimension("hidden size", ("hidden_size", "dim", "n_embd", "d_model"), 65_536, required=True),
    Dimension("vocabulary size", ("vocab_size",), 2_097_152, required=True),
    Dimension("attention head count", ("num_attention_heads", "n_heads", "n_head"), 4096),
    Dimension("key/value head count", ("num_key_value_heads",), 4096),
    Dimension("head size", ("head_dim",), 65_536),
    Dimension("feed-forward size", ("intermediate_size", "hidden_dim", "n_inner", "ffn_dim"), 1_048_576),
    Dimension("position count", ("max_position_embeddings", "n_positions"), 16_777_216),
    Dimension("token type count", ("type_vocab_size",), 1024),
    Dimension("label count", ("num_labels",), 100_000),
    Dimension("expert count", ("num_local_experts", "num_experts", "n_routed_experts"), 4096),
)
#: Model types whose position embeddings are a stored table (the others compute them, e.g. rotary).
LEARNED_POSITIONS = frozenset(
    {
        "bert",
        "roberta",
        "xlm-roberta",
        "distilbert",
        "electra",
        "camembert",
        "gpt2",
        "opt",
        "gpt_neo",
        "mpnet",
    }
)
MAX_ARCHITECTURES = 16
#: The safetensors format caps its JSON header at 100 MB; so does this reader.
MAX_HEADER_BYTES = 100_000_000
MAX_INDEX_BYTES = 50_000_000
#: Bytes per element of each safetensors dtype (sub-byte ones rounded up: a bound, never an undercount).
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "F4": 1,
    "F6_E2M3": 1,
    "F6_E3M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}
CONFIG_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
#: How far the parameters the weights hold may fall below or rise above what config.json describes.
TOLERANCE = 2.0
#: Where the stack of transformer blocks lives in tensor names (as plugins.layers finds it in a model).
_LAYER_NAME = re.compile(r"^((?:.*?\.)?(?:encoder\.layer|transformer\.layer|layers|h))\.(\d+)\.")
INDEX = "model.safetensors.index.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ModelInfo:
    """What the model-aware parameter checks know about a model (``Technique.check_for_model``)."""

    task: str
    model_type: str
    layers: int
    hidden_size: int
    vocab_size: int
    attention_heads: int | None = None
    intermediate_size: int | None = None

    def with_layers(self, layers: int) -> ModelInfo:
        return replace(self, layers=layers)

    @classmethod
    def from_config(cls, config: dict[str, Any], *, task: str, name: str = "config.json") -> ModelInfo:
        sizes = check_config(config, name=name)
        return cls(
            task=task,
            model_type=str(config.get("model_type") or ""),
            layers=sizes["layer count"],
            hidden_size=sizes["hidden size"],
            vocab_size=sizes["vocabulary size"],
            attention_heads=sizes.get("attention head count"),
            intermediate_size=sizes.get("feed-forward size"),
        )


def check_config(config: dict[str, Any], *, name: str = "config.json") -> dict[str, int]:
    """The config's sizes by ``Dimension.what``; ModelLoadError for a size that is not a positive whole
    number within its maximum, a missing required one, or ``architectures`` that is not a list of names."""
    architectures = config.get("architectures")
    if architectures is not None and (
        not isinstance(architectures, list)
        or not 0 < len(architectures) <= MAX_ARCHITECTURES
        or not all(isinstance(a, str) and 0 < len(a) <= 200 for a in architectures)
    ):
        raise ModelLoadError(
            f"{name}: architectures must be a list of up to {MAX_ARCHITECTURES} class names, such as "
            f'["BertForSequenceClassification"]; found {_shown(architectures)}. Save the model again with '
            "save_pretrained()"
        )
    sizes: dict[str, int] = {}
    for dimension in DIMENSIONS:
        for key in dimension.names:
            value = config.get(key)
            if value is None:  # absent, or null as GPT-2 writes n_inner: transformers' default applies
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= dimension.maximum:
                raise ModelLoadError(
                    f"{name}: {key} (the {dimension.what}) must be a whole number from 1 to "
                    f"{dimension.maximum:,}; found {_shown(value)}. Check the file, or save the model again "
                    "with save_pretrained()"
                )
            sizes.setdefault(dimension.what, value)
        if dimension.required and dimension.what not in sizes:
            raise ModelLoadError(
                f"{name} does not give the model's {dimension.what} (none of {', '.join(dimension.names)}); "
                "save the model again with save_pretrained()"
            )
    return sizes


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else f"the string {value!r}"
    return text if len(text) <= 80 else text[:77] + "..."


def estimate_parameters(config: dict[str, Any]) -> tuple[int, int]:
    """The fewest and the most parameters a model with this (already checked) config can have: the
    embeddings, each layer's attention and feed-forward matrices, and the head. A range, because a config
    does not always say whether the feed-forward is gated, the LM head tied, or the head a pooler too."""
    sizes = check_config(config)
    hidden, layers, vocab = sizes["hidden size"], sizes["layer count"], sizes["vocabulary size"]
    heads = sizes.get("attention head count", 1)
    head_dim = sizes.get("head size", max(1, hidden // heads))
    kv_heads = sizes.get("key/value head count", heads)
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    ffn = sizes.get("feed-forward size", 4 * hidden)
    experts = sizes.get("expert count", 1)
    positions = sizes.get("position count", 0) * hidden
    labels = sizes.get("label count", 0)
    labels = max(labels, len(config["id2label"]) if isinstance(config.get("id2label"), dict) else 2)
    embeddings = vocab * hidden + sizes.get("token type count", 0) * hidden
    learned = config.get("model_type") in LEARNED_POSITIONS
    low = embeddings + (positions if learned else 0) + layers * (attention + 2 * hidden * ffn)
    per_layer_high = attention + 3 * hidden * ffn * experts + 16 * (hidden + ffn) + hidden * experts
    head_high = vocab * hidden + hidden * hidden + hidden * labels + 2 * vocab
    high = embeddings + positions + layers * per_layer_high + head_high + 16 * hidden
    return low, high


@dataclass(frozen=True)
class Weights:
    """What the safetensors headers of a model directory hold."""

    files: tuple[str, ...]
    parameters: int
    bytes: int
    #: The layer numbers of the one stack of transformer blocks the tensor names show, if there is one.
    layer_indices: frozenset[int] | None


def weight_files(path: Path) -> list[str]:
    """The safetensors files transformers would load: model.safetensors, else the shards the index names,
    else every *.safetensors file of the directory."""
    if (path / WEIGHTS).is_file():
        return [WEIGHTS]
    if not (path / INDEX).is_file():
        return sorted(p.name for p in path.glob("*.safetensors") if p.is_file())
    index = _read_small_json(path / INDEX, MAX_INDEX_BYTES)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelLoadError(f"{path.name}/{INDEX} has no weight_map naming the shards; save the model again")
    shards = sorted({str(v) for v in weight_map.values()})
    for shard in shards:
        if "/" in shard or "\\" in shard or shard.startswith(".") or not shard.endswith(".safetensors"):
            raise ModelLoadError(
                f"{path.name}/{INDEX} names the shard {shard[:80]!r}, which is not a .safetensors file of "
                "this directory; save the model again"
            )
        if not (path / shard).is_file():
            raise ModelLoadError(f"{path.name}/{INDEX} names the shard {shard}, which is missing; copy it in")
    return shards


def _read_small_json(path: Path, limit: int) -> dict[str, Any]:
    try:
        if path.stat().st_size > limit:
            raise ModelLoadError(f"{path.parent.name}/{path.name} is over {limit:,} bytes; check the file")
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        raise ModelLoadError(
            f"{path.parent.name}/{path.name} is not JSON this tool can read; check it"
        ) from None
    if not isinstance(body, dict):
        raise ModelLoadError(f"{path.parent.name}/{path.name} must hold a JSON object; check the file")
    return body


def read_header(path: Path) -> dict[str, tuple[str, list[int], int]]:
    """A safetensors file's tensors as name → (dtype, shape, bytes), checked against the file's size."""
    name = f"{path.parent.name}/{path.name}"
    damaged = f"{name} is not a complete safetensors file"
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise ModelLoadError(f"{damaged}: it is only {size} bytes long; save the model again")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_HEADER_BYTES, size - 8):
                raise ModelLoadError(
                    f"{damaged}: its header claims {length:,} bytes but the file has {size:,}; save the model "
                    "again"
                )
            header = json.loads(file.read(length).decode("utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"{name} cannot be read ({exc.__class__.__name__}); check the file") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelLoadError(f"{damaged}: its header is not JSON; save the model again") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{damaged}: its header is not a JSON object; save the model again")
    tensors: dict[str, tuple[str, list[int], int]] = {}
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        tensor = _tensor(entry)
        if tensor is None:
            raise ModelLoadError(
                f"{damaged}: the header's entry for {key[:80]!r} is malformed; save it again"
            )
        dtype, shape, (begin, stop) = tensor
        nbytes = math.prod(shape) * DTYPE_BYTES[dtype]
        if stop - begin != nbytes:
            raise ModelLoadError(
                f"{damaged}: {key[:80]} is a {dtype} tensor of shape {shape}, {nbytes:,} bytes, but the "
                f"header gives it {stop - begin:,}; save the model again"
            )
        tensors[key] = (dtype, shape, nbytes)
        end = max(end, stop)
    if 8 + length + end != size:
        raise ModelLoadError(
            f"{damaged}: its header describes {end:,} bytes of tensors but the file holds "
            f"{size - 8 - length:,}; save the model again"
        )
    return tensors


def _tensor(entry: Any) -> tuple[str, list[int], tuple[int, int]] | None:
    if not isinstance(entry, dict):
        return None
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BYTES or not isinstance(shape, list) or not isinstance(offsets, list):
        return None
    if len(shape) > 16 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        return None
    if len(offsets) != 2 or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets):
        return None
    begin, stop = offsets
    if not 0 <= begin <= stop:
        return None
    return str(dtype), shape, (begin, stop)


def read_weights(path: Path) -> Weights:
    """The parameters and bytes the directory's safetensors headers hold (see ``weight_files``)."""
    files = weight_files(path)
    parameters = total = 0
    stacks: dict[str, set[int]] = {}
    for file in files:
        for key, (_dtype, shape, nbytes) in read_header(path / file).items():
            parameters += math.prod(shape)
            total += nbytes
            if match := _LAYER_NAME.match(key):
                stacks.setdefault(match.group(1), set()).add(int(match.group(2)))
    indices = frozenset(next(iter(stacks.values()))) if len(stacks) == 1 else None
    return Weights(tuple(files), parameters, total, indices)


def check_weights(
    path: Path, config: dict[str, Any], *, max_bytes: int | None = None, compressed: bool = False
) -> Weights:
    """Refuse weights that disagree with config.json, or a model over ``max_bytes``; return the weights.

    ``compressed``: a saved candidate whose format (roi_planner.json) stores fewer or smaller tensors than
    the config describes (pruned shapes, packed int8), so only weights larger than the config allows are
    refused.
    """
    low, high = estimate_parameters(config)
    weights = read_weights(path)
    shown = ", ".join(weights.files) if len(weights.files) <= 3 else f"the {len(weights.files)} shards"
    dtype_bytes = CONFIG_DTYPE_BYTES.get(str(config.get("torch_dtype") or config.get("dtype")), 4)
    if max_bytes is not None and low * dtype_bytes > max_bytes:
        raise ModelLoadError(
            f"{path.name}/config.json describes a model of at least {_count(low)} parameters "
            f"({_bytes(low * dtype_bytes)}), over this deployment's limit of {_bytes(max_bytes)} "
            "(MODEL_MAX_BYTES); pick a smaller model"
        )
    if max_bytes is not None and weights.bytes > max_bytes:
        raise ModelLoadError(
            f"{path.name}/{shown} holds {_bytes(weights.bytes)} of weights, over this deployment's limit of "
            f"{_bytes(max_bytes)} (MODEL_MAX_BYTES); pick a smaller model"
        )
    too_few = not compressed and weights.parameters * TOLERANCE < low
    if too_few or weights.parameters > high * TOLERANCE:
        raise ModelLoadError(
            f"{path.name}: config.json describes a model of {_count(low)} to {_count(high)} parameters, but "
            f"{shown} holds {_count(weights.parameters)}; the config and the weights do not belong together. "
            "Save the model again with save_pretrained()"
        )
    layers = check_config(config)["layer count"]
    indices = weights.layer_indices
    if indices is not None and not compressed and indices != frozenset(range(layers)):
        raise ModelLoadError(
            f"{path.name}: config.json says the model has {layers} layers, but {shown} holds the weights of "
            f"{len(indices)} (numbered {min(indices)} to {max(indices)}); save the model again with "
            "save_pretrained()"
        )
    return weights


def _count(n: int) -> str:
    for unit, size in (("billion", 10**9), ("million", 10**6), ("thousand", 10**3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,}"


def _bytes(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} bytes"
