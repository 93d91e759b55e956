"""The PoC runner: a plain spec in, one result per candidate out. Knows nothing of Django or Celery.

The baseline (an empty pipeline) and every candidate are produced, saved, reloaded from what was saved,
and measured by the same code in this one process, so their figures compare.
"""

from __future__ import annotations

import copy
import functools
import gc
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from plugins import registry
from plugins.artifacts import load_pretrained, save_model
from plugins.base import Context, Example, TechniqueError
from plugins.runtime import baseline_pipeline, served_pipeline
from workers.datasets import (
    CAUSAL_LM,
    DataError,
    Split,
    load_demo_examples,
    load_demo_texts,
    parse_task_data,
    split_for,
)
from workers.record import Goodput, Measurement

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
    # What serves the model today (plugins.runtime.SERVING_RUNTIMES): the baseline, and the reference every
    # candidate is timed against, are the original model converted to that runtime.
    serving_runtime: str = "pytorch"
    # The request's latency targets, for the serving scenario (workers.serving.Targets; None: no goodput).
    targets: Any = None
    # A search: candidates arrive while the PoC runs (workers.search_run's feed), so every prefix is kept.
    keep_prefixes: bool = False


@dataclass
class CandidateResult:
    key: str
    ok: bool
    error: str = ""
    measurement: Measurement | None = None  # set when ok
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

    Latency is timed against the original model, kept loaded for the whole PoC (``_time_latency``).

    ``report`` is called before each candidate, whenever a technique reports progress, and after every
    timing round; it may raise ``PocStopped`` to end the run there (the results already yielded stand)."""
    import torch

    from workers.environment import device_description, software_versions
    from workers.measure import MeasureConfig, count_parameters, fix_threads

    config: MeasureConfig = spec.measure or MeasureConfig()
    # The round order and every bootstrap draw from the PoC's seed: the same samples give the same intervals.
    config = replace(config, timing=replace(config.timing, seed=spec.seed))
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
    reference = (teacher, tokenizer)
    if baseline_pipeline(spec.serving_runtime):
        report(0.0, f"converting the model to {spec.serving_runtime}, the runtime it is served with today")
        served = CandidateSpec("served", baseline_pipeline(spec.serving_runtime))
        reference = _produce(teacher, tokenizer, split, served, spec, config, report, _PrefixCache([]))[:2]

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
    cache = _PrefixCache(
        [] if spec.keep_prefixes else [c.pipeline for c in spec.candidates], spec.keep_prefixes
    )
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
            size_bytes = _save(produced, produced_tokenizer, artifact, _model_card(label, candidate, notes))
            del produced, produced_tokenizer
            gc.collect()
            model, reloaded_tokenizer = load_pretrained(artifact, spec.task, device=spec.device)

            if generative:
                step_report(0.6, f"{label}: measuring perplexity on {len(lm_eval)} held-out texts")
            else:
                step_report(0.6, f"{label}: measuring accuracy on {len(split.eval)} held-out examples")
            quality = _quality(model, reloaded_tokenizer, spec, config, split, lm_eval, label2id)
            memory, latency, timing, goodput = _time_latency(
                model,
                reloaded_tokenizer,
                reference,
                eval_texts,
                spec=spec,
                config=config,
                is_baseline=not candidate.pipeline,
                step_report=functools.partial(_labelled_report, step_report, label),
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
            measurement=Measurement(
                latency=tuple(latency),
                # Classification reports accuracy and macro-F1; text generation perplexity and exact match.
                accuracy=quality.get("accuracy"),
                macro_f1=quality.get("macro_f1"),
                perplexity=quality.get("perplexity"),
                exact_match=quality.get("exact_match"),
                size_bytes=size_bytes,
                parameters=parameters,
                nonzero_parameters=nonzero,
                peak_memory_bytes=memory,
                produce_seconds=produce_seconds,
                device_hours=produce_seconds / 3600,
                goodput=goodput,
            ),
            environment={**environment, **_sample_counts(quality), "plugins": versions, **timing},
            notes=notes,
            artifact_path=str(artifact),
        )
        step_report(1.0, f"{label}: measured")


def _labelled_report(report: Report, label: str, fraction: float, message: str) -> None:
    """``report`` with the candidate's label before the message."""
    report(fraction, f"{label}: {message}")


def _time_latency(
    model: Any,
    tokenizer: Any,
    reference: tuple[Any, Any],
    texts: Sequence[str],
    *,
    spec: PocSpec,
    config: Any,
    is_baseline: bool,
    step_report: Report,
) -> tuple[int | None, list[Any], dict[str, float], Goodput | None]:
    """The candidate's peak memory (alone), then its latency sweep timed against ``reference`` (the
    baseline model and tokenizer) in interleaved rounds, reporting progress from 0.75 to 1 (to 0.9 when the
    serving scenario follows, see ``workers.serving_run``); its goodput (None when not asked for); and, for the
    environment, how long the timing took (``latency_timing_seconds``).

    The baseline row (the empty pipeline) is timed the same way, against a second copy of itself: the
    teacher against the baseline's saved-and-reloaded model. That costs one more timing per PoC, and buys
    baseline figures that rest on the same method and sample counts as every candidate's, a stability
    verdict (the ratio of two identical models must sit within the noise allowance around 1), and no
    dependence on which candidate runs first or on the baseline being in this run at all (a resumed run
    measures only the candidates not done yet). Taking the baseline's figures from its first pairing
    would save that time, but would tie the baseline row to another candidate's run and leave a
    baseline-only PoC without one. The baseline's own speedup (about 1) is not stored.
    """
    from workers.measure import generation_sweep, latency_sweep, peak_memory

    generative = spec.task == CAUSAL_LM
    started = time.perf_counter()
    memory = peak_memory(model, tokenizer, texts, device=spec.device, config=config, generative=generative)
    sweep = generation_sweep if generative else latency_sweep
    what = f"generating {config.new_tokens} tokens" if generative else "measuring latency"
    step_report(0.75, f"{what} at batch sizes {list(config.batch_sizes)}")
    share = 0.15 if config.goodput is not None and spec.targets is not None else 0.25
    progress = _TimingProgress(config, lambda f, m: step_report(0.75 + share * f, f"{what}{m}"))
    latency = sweep(
        model,
        tokenizer,
        texts,
        device=spec.device,
        config=config,
        reference=reference,
        is_baseline=is_baseline,
        on_batch_size=progress.batch_size,
        on_round=progress.round,
    )
    timing = {"latency_timing_seconds": round(time.perf_counter() - started, 3)}
    from workers.serving_run import serve_goodput

    goodput, seconds = serve_goodput(
        model, tokenizer, texts, latency, spec=spec, config=config, step_report=step_report
    )
    return memory, latency, {**timing, **seconds}, goodput


class _TimingProgress:
    """Progress of the interleaved timing: a step per batch size, moved along by every round (and every
    re-measurement), for the request's progress line. The round number is in the message at most once a
    second, so a fast model's rounds do not write the row many times a second; the fraction still moves.
    ``report`` may raise ``PocStopped``: it is let through, between two rounds."""

    def __init__(self, config: Any, report: Report) -> None:
        self.sizes = len(config.batch_sizes)
        self.max_rounds = config.timing.max_rounds
        self.attempts = config.timing.remeasure + 1
        self.report = report
        self.message = ""
        self.shown = 0.0

    def batch_size(self, position: int, batch_size: int) -> None:
        self.message = f" at batch size {batch_size}"
        self.shown = time.monotonic()
        self.report(position / self.sizes, self.message)

    def round(self, position: int, batch_size: int, attempt: int, done: int) -> None:
        within = (attempt - 1 + min(1.0, done / self.max_rounds)) / self.attempts
        if time.monotonic() - self.shown >= 1.0:
            again = f", re-measuring ({attempt} of {self.attempts})" if attempt > 1 else ""
            self.message = f" at batch size {batch_size}{again}, round {done}"
            self.shown = time.monotonic()
        self.report((position + within) / self.sizes, self.message)


def _save(model: Any, tokenizer: Any, artifact: Path, card: str) -> int:
    """Save the candidate as its artifact, with what its format means in the model card; its size in bytes."""
    size_bytes = save_model(model, tokenizer, artifact, card=card)
    if format_notes := _format_notes(artifact):
        with open(artifact / "README.md", "a") as readme:
            readme.write("\n" + "\n\n".join(format_notes) + "\n")
    return size_bytes


def _quality(
    model: Any,
    tokenizer: Any,
    spec: PocSpec,
    config: Any,
    split: Split,
    lm_eval: Sequence[Example],
    label2id: dict[str, int],
) -> dict[str, Any]:
    """Quality on the held-out split: perplexity (and exact match where there are references) for a causal
    LM, accuracy and macro-F1 for a classifier."""
    from workers.measure import evaluate_causal_lm, evaluate_classifier

    if spec.task == CAUSAL_LM:
        return evaluate_causal_lm(
            model,
            tokenizer,
            lm_eval,
            device=spec.device,
            max_length=config.max_length,
            batch_size=config.lm_eval_batch_size,
        )
    return evaluate_classifier(
        model,
        tokenizer,
        split.eval,
        label2id,
        device=spec.device,
        max_length=config.max_length,
        batch_size=config.eval_batch_size,
    )


def _sample_counts(quality: dict[str, Any]) -> dict[str, int]:
    """What a causal LM's quality figures rest on: the tokens scored for perplexity, and the examples
    whose reference completion was compared (only where the data has references)."""
    counts = {
        "perplexity_tokens": quality.get("eval_tokens"),
        "reference_examples": quality.get("reference_examples"),
    }
    return {name: count for name, count in counts.items() if count is not None}


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
    every hybrid that starts with it. Each candidate is still charged the full time to produce it. With
    ``keep_all`` (a search, whose later candidates are not known yet) every proper prefix is kept, the
    KEEP_ALL_LIMIT most recent ones."""

    KEEP_ALL_LIMIT = 4

    def __init__(self, pipelines: Sequence[Sequence[dict[str, Any]]], keep_all: bool = False) -> None:
        self.keep_all = keep_all
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

    def offer(self, prefix: Sequence[dict[str, Any]], stage: _Stage, final: bool = False) -> None:
        key = self._key(prefix)
        if self.keep_all and not final and key not in self.stages:
            while len(self.stages) >= self.KEEP_ALL_LIMIT:
                self.stages.pop(next(iter(self.stages)))
            self.shared.add(key)
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
    if not candidate.pipeline and not baseline_pipeline(spec.serving_runtime):
        return teacher, tokenizer, {}, 0.0
    pipeline, serving_note = served_pipeline(candidate.pipeline, spec.serving_runtime)
    candidate = replace(candidate, pipeline=pipeline)
    steps = len(candidate.pipeline)
    done, stage = cache.longest(candidate.pipeline)
    if stage is None:
        stage = _Stage(copy.deepcopy(teacher), tokenizer, {}, 0.0)
    if serving_note:
        stage.notes = {**stage.notes, "served on": serving_note}
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
        cache.offer(candidate.pipeline[: position + 1], stage, final=position + 1 == steps)
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
