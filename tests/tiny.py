"""Tiny models and data built from configs, seeded: what every test runs on instead of real weights."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

TOPICS = {
    "sports": "match goal team score player coach league season win ball",
    "cooking": "recipe oven flour sugar bake pan salt butter taste dinner",
    "weather": "rain cloud wind storm sunny forecast cold snow warm sky",
}
FILLER = ["the", "a", "of", "and", "in", "on", "with", "today", "very", "new", "big", "small"]
LABELS = sorted(TOPICS)


def tiny_texts(per_label: int = 20, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label in LABELS:
        words = TOPICS[label].split()
        for _ in range(per_label):
            length = rng.randint(4, 12)
            rows.append((" ".join(rng.choice(words + FILLER) for _ in range(length)), label))
    rng.shuffle(rows)
    return rows


def tiny_csv(per_label: int = 20, seed: int = 0) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows(tiny_texts(per_label, seed))
    return out.getvalue().encode()


def build_tiny_classifier(path: Path, *, layers: int = 2, seed: int = 0) -> Path:
    """A 2-layer BERT with a word-level vocabulary, saved as safetensors with its tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += sorted({w for words in TOPICS.values() for w in words.split()} | set(FILLER))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes the vocabulary itself; a vocab_file argument would be silently ignored.
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def tiny_lm_texts(count: int = 60, seed: int = 0) -> list[str]:
    """Short unlabeled 'business log' lines for causal-LM tests: word salad from the topic vocabularies."""
    return [text for text, _ in tiny_texts(per_label=count // len(LABELS) + 1, seed=seed)][:count]


def tiny_lm_jsonl(count: int = 60, seed: int = 0, *, references: bool = False) -> bytes:
    import json

    rows = []
    for text in tiny_lm_texts(count, seed):
        words = text.split()
        if references and len(words) > 3:
            rows.append({"prompt": " ".join(words[:-2]), "reference": " ".join(words[-2:])})
        else:
            rows.append({"text": text})
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def build_tiny_llama(path: Path, *, layers: int = 4, seed: int = 0) -> Path:
    """A 4-layer Llama (grouped-query attention, tied embeddings like SmolLM2) with a word-level tokenizer,
    saved as safetensors with its tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab += sorted({w for words in TOPICS.values() for w in words.split()} | set(FILLER))
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
