"""The PoC runner: a plain spec in, one result per candidate out. Knows nothing of Django or Celery.

The baseline (an empty pipeline) and every candidate are produced, saved, reloaded from what was saved,
and measured by the same code in this one process, so their figures compare.
"""

from __future__ import annotations

import copy
import gc
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugins import registry
from plugins.artifacts import load_pretrained, save_model
from plugins.base import Context, Example, TechniqueError
from workers.datasets import (
    CAUSAL_LM,
    DataError,
    Split,
    load_demo_examples,
    load_demo_texts,
    parse_task_data,
    split_for,
)

Report = Callable[[float, str], None]


class PocError(Exception):
    """The whole PoC cannot go on (model or data unusable); the message says why."""


class PocStopped(BaseException):
    """Raised by the ``report`` callback to stop the run at a safe point: a cancel, a time limit, another
    worker taking over. A BaseException, like ``asyncio.CancelledError``, so that neither the runner's
    per-candidate handlers nor a technique's ``except Exception`` swallow it."""


@dataclass(frozen=True)
class CandidateSpec:
    key: str
    pipeline: Sequence[dict[str, Any]]  # [] is the baseline


@dataclass(frozen=True)
class PocSpec:
    task: str
    model_dir: str
    dataset: str  # "demo" or a path to a CSV/JSONL file
    device: str
    candidates: Sequence[CandidateSpec]
    artifacts_dir: str
    seed: int = 0
    measure: Any = None  # workers.measure.MeasureConfig; typed loosely so building a spec needs no torch


@dataclass
class CandidateResult:
    key: str
    ok: bool
    error: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    artifact_path: str = ""


def load_examples(dataset: str, task: str = "sequence-classification") -> list[Example]:
    if dataset == "demo":
        return load_demo_texts() if task == CAUSAL_LM else load_demo_examples()
    path = Path(dataset)
    return parse_task_data(path.read_bytes(), path.name, task=task)


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def run_poc(spec: PocSpec, report: Report) -> Iterator[CandidateResult]:
    """Measure every candidate of ``spec`` and yield each result as soon as it is known.

    ``report`` is called before each candidate and whenever a technique reports progress; it may raise
    ``PocStopped`` to end the run there (the results already yielded stand)."""
    import torch

    from workers.measure import (
        MeasureConfig,
        PeakMemory,
        count_parameters,
        device_description,
        evaluate_causal_lm,
        evaluate_classifier,
        fix_threads,
        generation_sweep,
        latency_sweep,
        software_versions,
    )

    config: MeasureConfig = spec.measure or MeasureConfig()
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise PocError(
            "This request runs on a GPU, but this worker has no CUDA device; route it to a GPU worker."
        )
    threads = fix_threads(config.threads)
    _seed_everything(spec.seed)

    report(0.0, "loading the model and the task data")
    try:
        teacher, tokenizer = load_pretrained(Path(spec.model_dir), spec.task, device=spec.device)
        split = split_for(load_examples(spec.dataset, spec.task), spec.task)
    except (DataError, OSError, ValueError) as exc:
        raise PocError(str(exc)) from exc
    generative = spec.task == CAUSAL_LM
    label2id = {} if generative else _label_mapping(teacher, split)

    lm_eval = split.eval[: config.lm_eval_texts or None] if generative else []
    environment = {
        **device_description(spec.device),
        **software_versions(),
        "threads": threads,
        "seed": spec.seed,
        "train_examples": len(split.train),
        "eval_examples": len(split.eval),
        **({"perplexity_texts": len(lm_eval)} if generative else {}),
        "measure": config.as_dict(),
    }
    eval_texts = [e.text for e in split.eval]
    total = len(spec.candidates)
    cache = _PrefixCache([c.pipeline for c in spec.candidates])
    for index, candidate in enumerate(spec.candidates):

        def step_report(fraction: float, message: str, _index: int = index, _label: str = "") -> None:
            overall = (_index + max(0.0, min(1.0, fraction))) / total
            report(overall, message)

        label = registry.pipeline_label(candidate.pipeline)
        step_report(0.0, f"{label}: producing")
        _seed_everything(spec.seed)
        try:
            produced, produced_tokenizer, notes, produce_seconds = _produce(
                teacher, tokenizer, split, candidate, spec, config, step_report, cache
            )

            step_report(0.5, f"{label}: saving and reloading")
            artifact = Path(spec.artifacts_dir) / f"candidate-{candidate.key}"
            size_bytes = save_model(
                produced, produced_tokenizer, artifact, card=_model_card(label, candidate, notes)
            )
            if format_notes := _format_notes(artifact):
                with open(artifact / "README.md", "a") as card:
                    card.write("\n" + "\n\n".join(format_notes) + "\n")
            del produced, produced_tokenizer
            gc.collect()
            model, reloaded_tokenizer = load_pretrained(artifact, spec.task, device=spec.device)

            if generative:
                step_report(0.6, f"{label}: measuring perplexity on {len(lm_eval)} held-out texts")
                quality = evaluate_causal_lm(
                    model,
                    reloaded_tokenizer,
                    lm_eval,
                    device=spec.device,
                    max_length=config.max_length,
                    batch_size=config.lm_eval_batch_size,
                )
            else:
                step_report(0.6, f"{label}: measuring accuracy on {len(split.eval)} held-out examples")
                quality = evaluate_classifier(
                    model,
                    reloaded_tokenizer,
                    split.eval,
                    label2id,
                    device=spec.device,
                    max_length=config.max_length,
                    batch_size=config.eval_batch_size,
                )
            sweep = generation_sweep if generative else latency_sweep
            what = f"generating {config.new_tokens} tokens" if generative else "measuring latency"
            step_report(0.75, f"{label}: {what} at batch sizes {list(config.batch_sizes)}")
            with PeakMemory(spec.device) as memory:
                latency = sweep(
                    model,
                    reloaded_tokenizer,
                    eval_texts,
                    device=spec.device,
                    config=config,
                    on_batch_size=lambda i, b, _label=label, _what=what: step_report(
                        0.75 + 0.25 * i / len(config.batch_sizes), f"{_label}: {_what} at batch size {b}"
                    ),
                )
            parameters, nonzero = count_parameters(model)
            del model
            gc.collect()
        except (TechniqueError, MemoryError, torch.OutOfMemoryError) as exc:
            reason = "ran out of memory" if not isinstance(exc, TechniqueError) else str(exc)
            yield CandidateResult(candidate.key, ok=False, error=f"{label}: {reason}")
            continue
        versions = {step["technique"]: registry.version_of(step["technique"]) for step in candidate.pipeline}
        yield CandidateResult(
            candidate.key,
            ok=True,
            figures={
                **quality,
                "latency": latency,
                "size_bytes": size_bytes,
                "parameters": parameters,
                "nonzero_parameters": nonzero,
                "peak_memory_bytes": memory.peak_bytes,
                "produce_seconds": produce_seconds,
                "device_hours": produce_seconds / 3600,
            },
            environment={**environment, "plugins": versions},
            notes=notes,
            artifact_path=str(artifact),
        )
        step_report(1.0, f"{label}: measured")


def _label_mapping(model: Any, split: Split) -> dict[str, int]:
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()}
    missing = [label for label in split.labels if label not in label2id]
    if missing:
        known = ", ".join(sorted(label2id)) or "none"
        raise PocError(
            f"The model does not predict the data's labels {', '.join(missing)}; its labels are: {known}. "
            "Use data labelled with the model's labels, or a model fine-tuned on these labels."
        )
    return label2id


@dataclass
class _Stage:
    model: Any
    tokenizer: Any
    notes: dict[str, Any]
    seconds: float


class _PrefixCache:
    """Keeps the model after a pipeline prefix that several candidates share, so one distillation serves
    every hybrid that starts with it. Each candidate is still charged the full time to produce it."""

    def __init__(self, pipelines: Sequence[Sequence[dict[str, Any]]]) -> None:
        counts: dict[str, int] = {}
        for pipeline in pipelines:
            for length in range(1, len(pipeline) + 1):
                counts[self._key(pipeline[:length])] = counts.get(self._key(pipeline[:length]), 0) + 1
        self.shared = {key for key, count in counts.items() if count > 1}
        self.stages: dict[str, _Stage] = {}

    @staticmethod
    def _key(steps: Sequence[dict[str, Any]]) -> str:
        import json

        return json.dumps(list(steps), sort_keys=True)

    def longest(self, pipeline: Sequence[dict[str, Any]]) -> tuple[int, _Stage | None]:
        for length in range(len(pipeline), 0, -1):
            stage = self.stages.get(self._key(pipeline[:length]))
            if stage is not None:
                return length, _Stage(
                    copy.deepcopy(stage.model), stage.tokenizer, dict(stage.notes), stage.seconds
                )
        return 0, None

    def offer(self, prefix: Sequence[dict[str, Any]], stage: _Stage) -> None:
        key = self._key(prefix)
        if key in self.shared and key not in self.stages:
            self.stages[key] = _Stage(
                copy.deepcopy(stage.model), stage.tokenizer, dict(stage.notes), stage.seconds
            )


def _produce(
    teacher: Any,
    tokenizer: Any,
    split: Split,
    candidate: CandidateSpec,
    spec: PocSpec,
    config: Any,
    step_report: Report,
    cache: _PrefixCache,
) -> tuple[Any, Any, dict[str, Any], float]:
    """Apply the pipeline's techniques in order to a copy of the teacher, starting from the longest prefix
    already produced; return (model, tokenizer, notes, seconds spent producing it, prefix included)."""
    if not candidate.pipeline:
        return teacher, tokenizer, {}, 0.0
    steps = len(candidate.pipeline)
    done, stage = cache.longest(candidate.pipeline)
    if stage is None:
        stage = _Stage(copy.deepcopy(teacher), tokenizer, {}, 0.0)
    else:
        step_report(0.5 * done / steps, f"reusing the model after its first {done} step(s)")
    for position in range(done, steps):
        step = candidate.pipeline[position]
        technique_cls = registry.get(step["technique"])
        params = technique_cls.clean_params(step.get("params"))

        def technique_report(
            fraction: float, message: str, _p: int = position, _n: str = technique_cls.name
        ) -> None:
            step_report(0.5 * (_p + fraction) / steps, f"{_n}: {message}")

        ctx = Context(
            task=spec.task,
            device=spec.device,
            seed=spec.seed,
            tokenizer=stage.tokenizer,
            teacher_tokenizer=tokenizer,
            teacher=teacher,
            train=split.train,
            eval=split.eval,
            labels=split.labels,
            max_length=config.max_length,
            work_dir=spec.artifacts_dir,
            report=technique_report,
        )
        started = time.perf_counter()
        stage.model = technique_cls().apply(stage.model, ctx, params)
        stage.seconds += time.perf_counter() - started
        stage.tokenizer = ctx.tokenizer
        if technique_cls.speedup_caveat:
            stage.notes.setdefault("caveats", []).append(technique_cls.speedup_caveat)
        stage.notes.update({f"{technique_cls.name}: {key}": value for key, value in ctx.notes.items()})
        cache.offer(candidate.pipeline[: position + 1], stage)
    return stage.model, stage.tokenizer, stage.notes, stage.seconds


FORMAT_NOTES = {
    "roi-planner/dynamic-int8": (
        "Format: int8 weights (and int8 embeddings with a scale per row) with their scales in "
        "`model.safetensors`, listed in `roi_planner.json`. Only this tool reloads this format "
        "(`plugins.artifacts.load_pretrained`); transformers alone does not."
    ),
    "roi-planner/torchao-weight-only": (
        "Format: torchao weight-only int8/int4 tensors in `model.safetensors` (torchao's safetensors layout, "
        "with the TorchAoConfig in `config.json`), listed in `roi_planner.json`. This tool reloads it "
        "(`plugins.artifacts.load_pretrained`); transformers 5 `from_pretrained` also loads it when torchao is "
        "installed. int4 needs a CUDA GPU."
    ),
}
PRUNED_SHAPES_NOTE = (
    "Attention heads were removed, which the config alone does not describe: the layer shapes are in "
    "`roi_planner.json` and only this tool reloads the model (`plugins.artifacts.load_pretrained`)."
)


def _model_card(label: str, candidate: CandidateSpec, notes: dict[str, Any]) -> str:
    lines = [f"# {label}", "", "Produced by the Compression ROI Planner.", "", "Pipeline:"]
    lines += [f"- `{s['technique']}` {s.get('params', {})}" for s in candidate.pipeline] or [
        "- (the original model)"
    ]
    if notes:
        lines += ["", "Notes:"] + [f"- {key}: {value}" for key, value in notes.items()]
    return "\n".join(lines) + "\n"


def _format_notes(artifact: Path) -> list[str]:
    """What the saved format means for whoever reloads it, from the manifest the save wrote."""
    import json

    manifest_path = artifact / "roi_planner.json"
    if not manifest_path.is_file():
        return []
    manifest = json.loads(manifest_path.read_text())
    found = [FORMAT_NOTES[manifest["format"]]] if manifest.get("format") in FORMAT_NOTES else []
    return found + ([PRUNED_SHAPES_NOTE] if manifest.get("pruned_shapes") else [])
