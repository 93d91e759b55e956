"""The one served-model interface: a model running on an inference runtime, called like a transformers model.

``ServedModel`` wraps a compiled graph (an ONNX Runtime session, an OpenVINO compiled model) behind what the
measurement code calls on a transformers model: ``model(input_ids=..., attention_mask=...)`` returning an
object with ``.logits``; for a causal LM also ``position_ids``, ``use_cache``, ``logits_to_keep`` and the
cache argument (``cache``, as transformers 5.24 names it, or ``past_key_values``), whose returned cache is
passed back on the next call; ``generate`` (greedy); ``eval()``, ``to()``, ``modules()`` and ``config``. So
accuracy, perplexity, latency and memory are measured by the same code for every runtime.

The graph's contract (written by ``plugins.runtime.export``): a classifier takes the tokenizer's inputs
(``input_ids``, ``attention_mask``, ``token_type_ids`` where the model has them) and returns ``logits``.
A causal LM takes ``input_ids``, ``attention_mask`` (past and new tokens), ``position_ids``,
``logits_index`` (the positions whose logits are wanted) and ``past.{i}.key``/``past.{i}.value`` for every
layer (an empty sequence axis on the first call), and returns ``logits`` and ``present.{i}.key``/``value``.

torch is imported here: only workers load this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class Backend:
    """A compiled graph: its input names and one synchronous call (numpy in, numpy out, in output order)."""

    runtime: str = ""
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class RuntimeCache:
    """The KV cache between two calls: the graph's ``present`` tensors, fed back as ``past``."""

    tensors: list[np.ndarray]

    def get_seq_length(self) -> int:
        return int(self.tensors[0].shape[2]) if self.tensors else 0


@dataclass
class ServedOutput:
    """What a forward pass returns: ``logits`` (a torch tensor) and, with ``use_cache``, the cache."""

    logits: torch.Tensor
    cache: RuntimeCache | None = None

    @property
    def past_key_values(self) -> RuntimeCache | None:  # the name transformers used before 5.24
        return self.cache


@dataclass(frozen=True)
class KvLayout:
    """The KV cache's geometry: layers, key/value heads and head size (from the model, at export)."""

    layers: int
    heads: int
    head_dim: int

    def empty(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.heads, 0, self.head_dim)
        return [np.zeros(shape, dtype=np.float32) for _ in range(2 * self.layers)]


class ServedModel(torch.nn.Module):
    """A model served by an inference runtime, with the calling convention of a transformers model.

    ``tensors()`` yields the graph's stored weights as (name, numpy array): what the parameter count of
    the dashboard counts (``plugins.formats.dense_tensors``). ``source`` is what the save format writes
    (the ONNX ModelProto, the OpenVINO model); ``details`` goes into the manifest.
    """

    def __init__(
        self,
        config: Any,
        backend: Backend | None = None,
        *,
        task: str = "",
        kv: KvLayout | None = None,
        source: Any = None,
        tensors: Callable[[], Iterable[tuple[str, np.ndarray]]] = lambda: (),
        details: dict[str, Any] | None = None,
    ) -> None:
        # ``ServedModel(config)`` alone, like ``type(model)(config)`` for a transformers model, is the
        # architecture without a graph: what a layout (``plugins.formats.Layout``) compares shapes with.
        super().__init__()
        self.backend = backend if backend is not None else Backend()
        self.config = config
        self.task = task
        self.kv = kv
        self.source = source
        self.tensors = tensors
        self.details = dict(details or {})

    @property
    def runtime(self) -> str:
        return self.backend.runtime

    def __deepcopy__(self, memo: dict[int, Any]) -> ServedModel:
        # The compiled graph is read-only: copies (a pipeline prefix kept for several candidates) share it.
        return ServedModel(
            self.config,
            self.backend,
            task=self.task,
            kv=self.kv,
            source=self.source,
            tensors=self.tensors,
            details=dict(self.details),
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: RuntimeCache | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        past_key_values: RuntimeCache | None = None,
        **_: Any,
    ) -> ServedOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.kv is None:
            return self._classify(input_ids, attention_mask, token_type_ids)
        return self._decode(
            input_ids, attention_mask, position_ids, cache or past_key_values, bool(use_cache), logits_to_keep
        )

    def _classify(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> ServedOutput:
        feed = {"input_ids": _numpy(input_ids), "attention_mask": _numpy(attention_mask)}
        if "token_type_ids" in self.backend.input_names:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            feed["token_type_ids"] = _numpy(types)
        (logits,) = self.backend.run(feed)[:1]
        return ServedOutput(torch.from_numpy(np.ascontiguousarray(logits)))

    def _decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None,
        cache: RuntimeCache | None,
        use_cache: bool,
        logits_to_keep: int,
    ) -> ServedOutput:
        assert self.kv is not None
        batch, length = input_ids.shape
        if position_ids is None:  # from the mask, so left-padded prompts count their real tokens only
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]
        keep = length if not logits_to_keep or logits_to_keep > length else logits_to_keep
        feed = {
            "input_ids": _numpy(input_ids),
            "attention_mask": _numpy(attention_mask),
            "position_ids": _numpy(position_ids),
            "logits_index": np.arange(length - keep, length, dtype=np.int64),
        }
        past = cache.tensors if cache is not None else self.kv.empty(batch)
        names = [f"past.{i}.{kv}" for i in range(self.kv.layers) for kv in ("key", "value")]
        feed.update(zip(names, past, strict=True))
        outputs = self.backend.run(feed)
        logits = torch.from_numpy(np.ascontiguousarray(outputs[0]))
        return ServedOutput(logits, RuntimeCache(list(outputs[1:])) if use_cache else None)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 20,
        min_new_tokens: int = 0,
        do_sample: bool = False,
        **_: Any,
    ) -> torch.Tensor:
        """Greedy decoding with the KV cache (the prompt, then one call per token); stops at the config's
        end-of-text token once every row has produced it and ``min_new_tokens`` are done."""
        if self.kv is None:
            raise TypeError("a classifier does not generate text")
        if do_sample:
            raise ValueError("a served model generates greedily (do_sample=False)")
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        eos = _token_ids(getattr(self.config, "eos_token_id", None))
        pad = getattr(self.config, "pad_token_id", None)
        out = self(input_ids=input_ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
        tokens: list[torch.Tensor] = []
        done = torch.zeros(len(input_ids), dtype=torch.bool)
        position = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -1:]
        for index in range(max_new_tokens):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            if pad is not None:
                token = torch.where(done[:, None], torch.full_like(token, pad), token)
            tokens.append(token)
            done |= torch.isin(token[:, 0], torch.tensor(eos, dtype=token.dtype))
            if index + 1 == max_new_tokens or (bool(done.all()) and index + 1 >= min_new_tokens):
                break
            mask = torch.cat([mask, torch.ones_like(token)], dim=-1)
            position = position + 1
            out = self(
                input_ids=token, attention_mask=mask, position_ids=position, use_cache=True, cache=out.cache
            )
        return torch.cat([input_ids, *tokens], dim=-1)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.int64).contiguous().numpy()


def _token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, Sequence) else [int(value)]


def dense_tensors(module: Any, runtime: str) -> list[tuple[int, Any]] | None:
    """The weights a served model's graph stores, as torch tensors for the parameter count (each stored
    tensor once, under its own key); None for any other module."""
    if not isinstance(module, ServedModel) or module.runtime != runtime:
        return None
    return [
        (hash((id(module.source), name)), torch.from_numpy(np.array(array)))
        for name, array in module.tensors()
    ]
