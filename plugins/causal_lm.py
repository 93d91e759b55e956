"""Causal-LM batches: right- or left-padded encodings, next-token labels and loss, and a check that two
tokenizers split texts alike. Shared by distillation, pruning and the measurement of causal LMs.

Heavy imports (torch) happen inside the functions: importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from plugins.base import TechniqueError


def pad_token_id(tokenizer: Any) -> int:
    """The id that pads a causal-LM batch: the pad token's, else the end-of-sequence token's (Llama
    tokenizers often have no pad token), else 0. Padding is masked out, so any id serves."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, list | tuple):
            value = value[0] if value else None
        if isinstance(value, int) and value >= 0:
            return value
    return 0


def encode_causal_lm(
    tokenizer: Any, texts: Sequence[str], *, max_length: int, device: Any, padding_side: str = "right"
) -> dict[str, Any]:
    """``input_ids`` and ``attention_mask`` of ``texts`` for a causal LM, truncated to ``max_length`` and
    padded with ``pad_token_id(tokenizer)``: on the right for training and scoring, on the left for
    generation (so that every row's next token follows its last real one).

    The padding is done here rather than by the tokenizer, so a tokenizer without a pad token works and is
    never changed (setting one would change what ``save_pretrained`` writes). A text that gives no token at
    all reads as the pad token, so that every row attends to something.
    """
    import torch

    if tokenizer is None:
        raise TechniqueError("This technique needs the model's tokenizer")
    rows = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad = pad_token_id(tokenizer)
    rows = [list(row) or [pad] for row in rows]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        start = width - len(row) if padding_side == "left" else 0
        input_ids[i, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, start : start + len(row)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def next_token_labels(inputs: Mapping[str, Any]) -> Any:
    """The targets of next-token prediction for a batch from ``encode_causal_lm``: position ``i`` predicts
    token ``i + 1``, so the labels are the input ids shifted left by one, with -100 at padding (and after
    each text's last token). Compare with ``logits[:, :-1]``."""
    input_ids, mask = inputs["input_ids"], inputs["attention_mask"]
    return input_ids.masked_fill(mask == 0, -100)[:, 1:]


def next_token_loss(logits: Any, labels: Any) -> Any | None:
    """Mean cross-entropy of ``logits[:, :-1]`` against ``next_token_labels``; None when the batch has no
    target (every text one token long)."""
    import torch.nn.functional as F

    if not bool((labels != -100).any()):
        return None
    vocabulary = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, vocabulary).float(), labels.reshape(-1), ignore_index=-100
    )


def same_tokens(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two encodings of the same texts hold the same tokens in the same places."""
    import torch

    ids_a, ids_b = a["input_ids"], b["input_ids"].to(a["input_ids"].device)
    mask_a, mask_b = a["attention_mask"], b["attention_mask"].to(a["attention_mask"].device)
    return (
        ids_a.shape == ids_b.shape
        and torch.equal(mask_a, mask_b)
        and torch.equal(ids_a.masked_fill(mask_a == 0, 0), ids_b.masked_fill(mask_b == 0, 0))
    )
