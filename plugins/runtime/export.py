"""A transformers model as an ONNX graph (torch.onnx's dynamo exporter), and the calibration inputs a
static quantizer reads.

The graph's contract is the one ``plugins.runtime.served`` calls (see its docstring). A causal LM's KV cache
is a graph input and output per layer (``past.{i}.key`` → ``present.{i}.key``), so the runtime decodes one
token per call with the cache on, as the PyTorch model does. Both runtimes start from this one export:
ONNX Runtime runs it, OpenVINO converts it (``openvino.convert_model``).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plugins.base import Context, TechniqueError
from plugins.runtime.served import KvLayout

logger = logging.getLogger(__name__)

OPSET = 18


def cache_argument(model: Any) -> str:
    """transformers 5.24 renamed the cache argument and output from past_key_values to cache."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def prepare(model: Any, ctx: Context) -> Any:
    """The PyTorch model in fp32 on the CPU, ready to export; refuses layers no exporter understands."""
    from plugins import formats

    stored = formats.detect(model)
    if stored is not None:
        raise TechniqueError(
            f"the model holds layers of the {stored.name} format, which cannot be exported to a runtime; "
            "drop the quantize step and use this runtime's own int8 option instead"
        )
    if any(p.dtype != torch.float32 for p in model.parameters()):
        ctx.notes["exported in"] = "fp32 (the runtime picks its own precision)"
    return model.to("cpu", torch.float32).eval()


def kv_layout(model: Any, tokenizer: Any) -> KvLayout:
    """The KV cache's geometry, read from one cached forward pass of the model itself."""
    ids = torch.tensor([[_some_token(tokenizer)] * 2])
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
    layers = getattr(out, cache_argument(model)).layers
    keys = layers[0].keys
    return KvLayout(layers=len(layers), heads=int(keys.shape[1]), head_dim=int(keys.shape[3]))


def _some_token(tokenizer: Any) -> int:
    ids = tokenizer("a", add_special_tokens=False).input_ids
    return int(ids[0]) if ids else 0


class _CausalLmGraph(torch.nn.Module):
    """The causal LM with its cache as flat tensors: what the exporter traces."""

    def __init__(self, model: Any, kv: KvLayout) -> None:
        super().__init__()
        self.model = model
        self.kv = kv
        self.cache_arg = cache_argument(model)

    def forward(self, input_ids, attention_mask, position_ids, logits_index, past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer in range(self.kv.layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{self.cache_arg: cache},
        )
        hidden = out.last_hidden_state.index_select(1, logits_index)
        logits = self.model.get_output_embeddings()(hidden)
        presents = [t for layer in getattr(out, self.cache_arg).layers for t in (layer.keys, layer.values)]
        return (logits, *presents)


class _ClassifierGraph(torch.nn.Module):
    def __init__(self, model: Any, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(self, inputs):
        return self.model(**dict(zip(self.names, inputs, strict=True))).logits


def classifier_inputs(model: Any) -> tuple[str, ...]:
    accepted = inspect.signature(type(model).forward).parameters
    return tuple(n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted)


def export_onnx(model: Any, tokenizer: Any, task: str, path: Path) -> tuple[Path, KvLayout | None]:
    """Export ``model`` (fp32, CPU) to ``path`` (one self-contained .onnx file); return it and, for a causal
    LM, the KV cache's geometry."""
    dim = torch.export.Dim.AUTO
    token = _some_token(tokenizer)
    if task == "causal-lm":
        kv = kv_layout(model, tokenizer)
        batch, past_length, length = 2, 3, 4
        args: tuple[Any, ...] = (
            torch.full((batch, length), token),
            torch.ones(batch, past_length + length, dtype=torch.long),
            torch.arange(past_length, past_length + length).expand(batch, -1).contiguous(),
            torch.arange(length),
            tuple(torch.randn(batch, kv.heads, past_length, kv.head_dim) for _ in range(2 * kv.layers)),
        )
        names = ["input_ids", "attention_mask", "position_ids", "logits_index"]
        pasts = [
            f"{kind}.{i}.{kv_}" for kind in ("past",) for i in range(kv.layers) for kv_ in ("key", "value")
        ]
        outputs = ["logits"] + [p.replace("past.", "present.") for p in pasts]
        shapes: Any = (
            {0: dim, 1: dim},
            {0: dim, 1: dim},
            {0: dim, 1: dim},
            {0: dim},
            tuple({0: dim, 2: dim} for _ in pasts),
        )
        graph: torch.nn.Module = _CausalLmGraph(model, kv)
        input_names = names + pasts
    else:
        kv = None
        names = list(classifier_inputs(model))
        args = (
            tuple(
                torch.full((2, 5), token) if n == "input_ids" else torch.ones(2, 5, dtype=torch.long)
                for n in names
            ),
        )
        shapes = (tuple({0: dim, 1: dim} for _ in names),)
        graph = _ClassifierGraph(model, names)
        input_names, outputs = names, ["logits"]
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            args,
            dynamo=True,
            input_names=input_names,
            output_names=outputs,
            dynamic_shapes=shapes,
            opset_version=OPSET,
            verbose=False,
        )
    if program is None:  # pragma: no cover - the dynamo exporter always returns its program
        raise TechniqueError("the ONNX exporter returned no graph")
    program.save(str(path), external_data=False)
    return path, kv


def calibration_feeds(
    backend_run: Any, ctx: Context, kv: KvLayout | None, *, samples: int, names: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """Inputs for a static quantizer, one text each, from the training split (never the held-out one).

    A classifier's are the tokenized texts. A causal LM's are decoding steps with a real cache: the first
    half of the text is run through ``backend_run`` (the fp32 graph) and the second half is fed with the
    cache it returned, so every activation the quantizer observes (the cache included) is non-empty.
    """
    texts = [e.text for e in ctx.train if e.text.strip()][:samples]
    if not texts:
        raise TechniqueError("static quantization calibrates on the training texts, and there are none")
    feeds = []
    for text in texts:
        ids = ctx.tokenizer(text, truncation=True, max_length=ctx.max_length, return_tensors="np")
        if kv is None:
            feeds.append({n: ids[n].astype(np.int64) for n in names if n in ids} | _zeros(names, ids))
            continue
        tokens = ids["input_ids"].astype(np.int64)
        if tokens.shape[1] < 2:
            continue
        half = tokens.shape[1] // 2
        past_names = [f"past.{i}.{k}" for i in range(kv.layers) for k in ("key", "value")]
        first = {
            "input_ids": tokens[:, :half],
            "attention_mask": np.ones((1, half), np.int64),
            "position_ids": np.arange(half, dtype=np.int64)[None],
            "logits_index": np.arange(half, dtype=np.int64),
        } | dict(zip(past_names, kv.empty(1), strict=True))
        presents = backend_run(first)[1:]
        rest = tokens.shape[1] - half
        feeds.append(
            {
                "input_ids": tokens[:, half:],
                "attention_mask": np.ones((1, tokens.shape[1]), np.int64),
                "position_ids": np.arange(half, tokens.shape[1], dtype=np.int64)[None],
                "logits_index": np.arange(rest, dtype=np.int64),
            }
            | dict(zip(past_names, presents, strict=True))
        )
    if not feeds:
        raise TechniqueError("static quantization needs training texts of at least two tokens")
    return feeds


def _zeros(names: Sequence[str], ids: Any) -> dict[str, np.ndarray]:
    return {n: np.zeros_like(ids["input_ids"], dtype=np.int64) for n in names if n not in ids}
