"""vLLM: a causal LM served by vLLM's engine on a CUDA GPU (the optional ``vllm`` extra).

The format, ``roi-planner/vllm``, is the model as transformers saves it (config.json, safetensors) with a
manifest naming the engine settings; vLLM loads that directory itself (``trust_remote_code`` off).

Behind the served-model interface (``plugins.runtime.served``), a call with ``use_cache`` or
``logits_to_keep=1`` is one greedy decoding step of vLLM (``SamplingParams(temperature=0, max_tokens=1)``)
with prefix caching on, so the engine reuses the KV cache of the tokens it has seen; the returned logits
hold the chosen token's log-probability and -inf elsewhere (what greedy decoding reads). A full forward
returns the log-probabilities of every vocabulary token at every position (``prompt_logprobs``), which
perplexity reads as logits.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.base import Context, Param, Technique, TechniqueError
from plugins.formats import Format

VLLM = "roi-planner/vllm"
RUNTIME = "vllm"


def _served(model: Any) -> bool:
    return type(model).__name__ == "ServedVllm"


@dataclass
class VllmCache:
    """The tokens each row has so far; vLLM's prefix cache holds their keys and values."""

    tokens: list[list[int]]

    def get_seq_length(self) -> int:
        return max((len(t) for t in self.tokens), default=0)


def served_vllm(model_dir: Path, *, config: Any, dtype: str, quantization: str) -> Any:
    """A ``ServedVllm`` over the transformers directory ``model_dir`` (imports vLLM and torch)."""
    import torch
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from plugins.runtime.served import ServedOutput

    class ServedVllm(torch.nn.Module):
        runtime = RUNTIME

        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.model_dir = model_dir
            self.details = {"dtype": dtype, "quantization": quantization}
            self.engine = LLM(
                model=str(model_dir),
                tokenizer=str(model_dir),
                dtype=dtype,
                quantization=None if quantization == "none" else quantization,
                trust_remote_code=False,
                enable_prefix_caching=True,
                max_logprobs=int(config.vocab_size),
                seed=0,
            )

        def _run(self, rows: list[list[int]], params: Any) -> list[Any]:
            prompts = [TokensPrompt(prompt_token_ids=row) for row in rows]
            return self.engine.generate(prompts, params, use_tqdm=False)

        def forward(
            self,
            input_ids,
            attention_mask=None,
            position_ids=None,
            cache=None,
            use_cache=None,
            logits_to_keep=0,
            past_key_values=None,
            **_,
        ):
            cache = cache or past_key_values
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            new = [
                ids[m.bool()].tolist()
                for ids, m in zip(input_ids.cpu(), mask[:, -input_ids.shape[1] :].cpu(), strict=True)
            ]
            rows = [old + row for old, row in zip(cache.tokens, new, strict=True)] if cache else new
            vocab = int(self.config.vocab_size)
            if use_cache or logits_to_keep == 1:
                outs = self._run(rows, SamplingParams(temperature=0.0, max_tokens=1, logprobs=1))
                logits = torch.full((len(rows), 1, vocab), float("-inf"), device=input_ids.device)
                for i, out in enumerate(outs):
                    token = out.outputs[0].token_ids[0]
                    logits[i, 0, token] = out.outputs[0].logprobs[0][token].logprob
                return ServedOutput(logits, VllmCache(rows) if use_cache else None)
            params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=vocab, logprobs=vocab)
            outs = self._run(rows, params)
            logits = torch.full((*input_ids.shape, vocab), float("-inf"))
            for i, (out, m) in enumerate(zip(outs, mask.cpu(), strict=True)):
                positions = m.bool().nonzero().flatten().tolist()
                steps = list(out.prompt_logprobs[1:]) + [out.outputs[0].logprobs[0]]
                for position, step in zip(positions, steps, strict=True):
                    for token, logprob in step.items():
                        logits[i, position, token] = logprob.logprob
            return ServedOutput(logits.to(input_ids.device))

    return ServedVllm()


def _save(model: Any, path: Path) -> dict[str, Any]:
    for source in model.model_dir.iterdir():
        if (
            source.name == "config.json"
            or source.suffix == ".safetensors"
            or source.name.endswith(".index.json")
        ):
            shutil.copy2(source, path / source.name)
    return {"runtime": RUNTIME, **model.details}


def _load(path: Path, task: str, manifest: dict[str, Any], device: str) -> Any:
    from transformers import AutoConfig

    from plugins.artifacts import ModelLoadError

    if not device.startswith("cuda"):
        raise ModelLoadError(f"{path.name} is served by vLLM, which needs a CUDA GPU, not {device}")
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    return served_vllm(
        path,
        config=config,
        dtype=str(manifest.get("dtype", "auto")),
        quantization=str(manifest.get("quantization", "none")),
    )


def _dense_tensors(module: Any) -> list[tuple[int, Any]] | None:
    if not _served(module):
        return None
    from safetensors.torch import load_file

    return [
        (hash((str(f), key)), tensor)
        for f in sorted(module.model_dir.glob("*.safetensors"))
        for key, tensor in load_file(str(f)).items()
    ]


VLLM_FORMAT = Format(VLLM, detects=_served, save=_save, load=_load, dense_tensors=_dense_tensors)


class Vllm(Technique):
    """Serves a causal LM with vLLM on a CUDA GPU: PagedAttention KV cache, prefix caching, the engine's
    own kernels; optionally fp8 weights quantized when the model loads.

    Source: vLLM (Kwon et al. 2023, "Efficient Memory Management for Large Language Model Serving with
    PagedAttention"), its offline ``LLM``/``SamplingParams`` API. Needs the ``vllm`` extra
    (``pip install roi-planner[vllm]``). The last step of a pipeline: what it measures is the model as
    vLLM serves it, decoding step by step through its prefix cache (continuous batching across requests is
    not part of the figure).
    """

    name = "runtime.vllm"
    title = "vLLM (GPU)"
    family = "runtime"
    devices = ("cuda",)
    tasks = ("causal-lm",)
    formats = (VLLM_FORMAT,)
    speedup_caveat = (
        "vLLM is timed one decoding step per call through its prefix cache; its continuous batching of "
        "concurrent requests, where most of its throughput comes from, is not in this figure."
    )
    params = (
        Param(
            "dtype",
            str,
            "auto",
            "Weights and arithmetic: auto (the model's), bfloat16 or float16.",
            choices=("auto", "bfloat16", "float16"),
        ),
        Param(
            "quantization",
            str,
            "none",
            "none, or fp8: weights quantized to fp8 as vLLM loads them (Hopper or newer GPUs).",
            choices=("none", "fp8"),
        ),
    )

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise TechniqueError("vLLM is not installed on this worker: pip install roi-planner[vllm]")
        from plugins import formats

        if formats.detect(model) is not None:
            raise TechniqueError("vLLM loads transformers checkpoints; drop the quantize step before it")
        base = Path(ctx.work_dir) if ctx.work_dir else Path.cwd()
        model_dir = base / f"vllm-{id(model)}"
        ctx.report(0.0, "saving the model for vLLM")
        model.save_pretrained(model_dir, safe_serialization=True)
        ctx.tokenizer.save_pretrained(model_dir)
        ctx.report(0.3, "starting the vLLM engine")
        served = served_vllm(
            model_dir, config=model.config, dtype=params["dtype"], quantization=params["quantization"]
        )
        ctx.notes["runtime"] = f"vLLM, {params['dtype']}, {params['quantization']}"
        return served
