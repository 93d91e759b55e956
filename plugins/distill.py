"""Distillation techniques."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from plugins.base import Context, Param, ParamError, Technique, TechniqueError
from plugins.layers import check_layers_exist, parse_layer_list

if TYPE_CHECKING:
    from plugins.model_info import ModelInfo


def parse_layers(text: str) -> list[int]:
    """``"0, 2,4"`` → ``[0, 2, 4]``; TechniqueError on anything that is not a comma list of distinct layer
    numbers (at most ``plugins.layers.MAX_LISTED_LAYERS``)."""
    return parse_layer_list(text, name="layers")


def student_layer_indices(teacher_layers: int, *, student_layers: int, layers: str = "") -> list[int]:
    """Which of the ``teacher_layers`` blocks the student keeps: the explicit ``layers`` list when given,
    else ``student_layers`` evenly spaced ones (first and last included, as DistilBERT did). TechniqueError
    when the student would not be smaller than the teacher or names a layer the teacher does not have."""
    from plugins.layers import evenly_spaced

    if layers.strip():
        indices = parse_layers(layers)
        if not indices:
            raise TechniqueError("layers lists no layer; leave it empty to use student_layers")
    elif student_layers < 1:
        raise TechniqueError("student_layers must be at least 1")
    elif student_layers >= teacher_layers:
        indices = list(range(student_layers))  # refused just below, with the reason
    else:
        indices = evenly_spaced(student_layers, teacher_layers)
    if len(indices) >= teacher_layers:
        raise TechniqueError(
            f"A student with {len(indices)} layers is not smaller than the model, which has {teacher_layers}: "
            f"choose fewer than {teacher_layers} layers"
        )
    check_layers_exist(indices, teacher_layers, name="layers")
    return indices


class KnowledgeDistillation(Technique):
    """Knowledge distillation into a shallower student: the student is the model with only some of its
    transformer layers kept (the others removed), then fine-tuned on the training texts to match the
    original model's softened predictions and, when the data has labels, the labels too.

    Sources: Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural Network" (the
    temperature-softened soft-target loss, weighted by ``alpha`` against the hard-label loss); Sanh et al.
    2019, "DistilBERT, a distilled version of BERT" (initialising the student from a subset of the
    teacher's layers, evenly spaced by default); the optional hidden-state loss as in TinyBERT (Jiao et al.
    2020) and MiniLM (Wang et al. 2020). Unlabelled data (e.g. production logs) works: the soft targets
    alone then teach the student. The student saves as an ordinary transformers checkpoint with fewer
    layers. Training runs on the training split only.

    Causal LMs (Llama-style decoders such as SmolLM2) are distilled token by token, the word-level
    distillation of Kim and Rush 2016, "Sequence-Level Knowledge Distillation" (DistilGPT2 was made the same
    way): the soft-target loss is the KL divergence between the teacher's and the student's next-token
    distributions at every token of the training texts, and the hard loss (``1 − alpha``) is ordinary
    next-token prediction on those texts, so no labels are needed.
    """

    name = "distill.kd"
    title = "Knowledge distillation into fewer layers"
    family = "distill"
    devices = ("cpu", "cuda")
    tasks = ("sequence-classification", "causal-lm")
    params = (
        Param(
            "student_layers",
            int,
            2,
            "How many transformer layers the student keeps, evenly spaced through the model (first and "
            "last included). Ignored when layers is set.",
            minimum=1,
            maximum=48,
        ),
        Param(
            "layers",
            str,
            "",
            "Exactly which layers to keep, numbered from 0, as a comma list such as 0,2,4. Empty: use "
            "student_layers evenly spaced ones.",
        ),
        Param(
            "temperature",
            float,
            2.0,
            "Softmax temperature of the soft targets: higher shows the student more of how the teacher "
            "ranks the wrong classes (or, for a causal LM, the less likely next tokens).",
            minimum=1,
            maximum=20,
        ),
        Param(
            "alpha",
            float,
            0.5,
            "Weight of the soft-target (teacher) loss; 1 − alpha goes to the labels. Without labels the "
            "soft targets alone are used. For a causal LM, 1 − alpha goes to predicting the training "
            "texts' next tokens.",
            minimum=0,
            maximum=1,
        ),
        Param(
            "epochs",
            float,
            2.0,
            "Passes over the training data.",
            minimum=0.1,
            maximum=50,
        ),
        Param(
            "max_steps",
            int,
            0,
            "Upper limit on optimizer steps, to bound the training time; 0 = no cap.",
            minimum=0,
            maximum=100000,
        ),
        Param(
            "learning_rate",
            float,
            1e-4,
            "Peak learning rate of AdamW, after a linear warmup; it then decays linearly to 0.",
            minimum=1e-6,
            maximum=1e-2,
        ),
        Param(
            "batch_size",
            int,
            32,
            "Training examples per optimizer step.",
            minimum=1,
            maximum=512,
        ),
        Param(
            "max_length",
            int,
            128,
            "Longest input in tokens during training; longer texts are truncated.",
            minimum=8,
            maximum=2048,
        ),
        Param(
            "hidden_weight",
            float,
            0.0,
            "Weight of an extra loss pulling the student's hidden states towards evenly spaced teacher "
            "layers (TinyBERT/MiniLM style); 0 = off.",
            minimum=0,
            maximum=100,
        ),
    )

    @classmethod
    def check(cls, params: Mapping[str, Any], *, device: str, task: str) -> str | None:
        try:
            parse_layers(str(params.get("layers") or ""))
        except TechniqueError as exc:
            return str(exc)
        return None

    @classmethod
    def check_for_model(cls, params: Mapping[str, Any], model_info: ModelInfo) -> None:
        try:
            student_layer_indices(
                model_info.layers, student_layers=params["student_layers"], layers=params["layers"]
            )
        except TechniqueError as exc:
            raise ParamError(str(exc)) from None

    @classmethod
    def model_after(cls, params: Mapping[str, Any], model_info: ModelInfo) -> ModelInfo:
        kept = student_layer_indices(
            model_info.layers, student_layers=params["student_layers"], layers=params["layers"]
        )
        return model_info.with_layers(len(kept))

    def apply(self, model: Any, ctx: Context, params: Mapping[str, Any]) -> Any:
        from plugins.layers import keep_layers, layer_count
        from plugins.training import kd_finetune

        started = time.perf_counter()
        total = layer_count(model)
        kept = student_layer_indices(total, student_layers=params["student_layers"], layers=params["layers"])
        ctx.report(0.0, f"building a {len(kept)}-layer student from layers {', '.join(map(str, kept))}")
        student = keep_layers(model, kept)
        stats: dict[str, Any] = {}
        student = kd_finetune(
            student,
            ctx,
            steps=params["max_steps"] or None,
            epochs=params["epochs"],
            learning_rate=params["learning_rate"],
            batch_size=params["batch_size"],
            max_length=params["max_length"],
            temperature=params["temperature"],
            alpha=params["alpha"],
            hidden_weight=params["hidden_weight"],
            report=ctx.report,
            stats=stats,
        )
        ctx.notes.update(
            {
                "kept layers": kept,
                "layers": f"{len(kept)} of {total}",
                "training steps": stats["steps"],
                "final loss": round(stats["final_loss"], 4),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        ctx.report(1.0, f"distilled in {stats['steps']} steps, final loss {stats['final_loss']:.3f}")
        return student.to(ctx.device).eval()
