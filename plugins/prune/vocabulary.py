"""Vocabulary pruning: the embedding matrix and the tokenizer trimmed to the tokens the training texts use."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from plugins.base import Context, Param, Technique, TechniqueError
from plugins.prune.common import causal_lm_refusal

#: Config attributes holding token ids, which must be kept and renumbered.
TOKEN_ATTRS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")


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
        return causal_lm_refusal(
            super().refusal(device=device, task=task),
            task,
            "a causal LM's vocabulary is also its output, so trimming it would change what the model can "
            "generate and its perplexity",
        )

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:

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
        keep = _used_token_ids(tokenizer, spec, texts, params["min_count"])
        config = model.config
        keep |= {v for a in TOKEN_ATTRS if isinstance(v := getattr(config, a, None), int) and 0 <= v < rows}
        kept = sorted(i for i in keep if 0 <= i < rows)
        if len(kept) < len(keep):
            raise TechniqueError(
                f"The tokenizer has ids up to {max(keep)}, but the model has only {rows} embeddings"
            )
        old_to_new = {old: new for new, old in enumerate(kept)}

        ctx.report(0.3, f"keeping {len(kept)} of {rows} tokens")
        new_tokenizer = _trimmed_tokenizer(tokenizer, spec, old_to_new)
        _check_same_tokens(tokenizer, new_tokenizer, texts, old_to_new)

        _trim_embeddings(model, embeddings, kept, old_to_new)
        config.vocab_size = len(kept)
        for attr in TOKEN_ATTRS:
            value = getattr(config, attr, None)
            if isinstance(value, int) and value in old_to_new:
                setattr(config, attr, old_to_new[value])

        ctx.tokenizer = new_tokenizer
        ctx.notes["vocabulary kept"] = len(kept)
        ctx.notes["vocabulary original"] = rows
        ctx.notes["embedding parameters removed"] = (rows - len(kept)) * embeddings.embedding_dim
        ctx.report(1.0, f"vocabulary trimmed to {len(kept)} of {rows} tokens")
        return model


def _used_token_ids(tokenizer: Any, spec: dict[str, Any], texts: Sequence[str], min_count: int) -> set[int]:
    """The ids the training texts use at least ``min_count`` times, plus every added, special and unknown
    token's."""
    import collections

    counts: collections.Counter[int] = collections.Counter()
    for start in range(0, len(texts), 256):
        encoded = tokenizer(texts[start : start + 256], add_special_tokens=False)["input_ids"]
        for ids in encoded:
            counts.update(ids)
    keep = {i for i, n in counts.items() if n >= min_count}
    keep |= {int(t["id"]) for t in spec.get("added_tokens", [])}
    keep |= {int(i) for i in tokenizer.all_special_ids}
    unk = spec["model"].get("unk_token")
    if unk is not None and unk in spec["model"]["vocab"]:
        keep.add(int(spec["model"]["vocab"][unk]))
    return keep


def _trim_embeddings(model: Any, embeddings: Any, kept: list[int], old_to_new: Mapping[int, int]) -> None:
    """Keep only the rows ``kept`` of the input embeddings and of the output embeddings (tied or not)."""
    import torch

    rows = embeddings.num_embeddings
    index = torch.tensor(kept, device=embeddings.weight.device)
    pad = getattr(model.config, "pad_token_id", None)
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
