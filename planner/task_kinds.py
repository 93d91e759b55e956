"""What differs between the tasks a request can have, in one object per task.

Forms, dashboards, exports and templates ask the request's ``TaskKind`` instead of testing the task:
its quality metric, its own targets and their defaults, the what-if figures it adds, how its data is
read, what "demo" means for it, and the columns its candidates table, CSV and batch sweep show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from planner import roi
from planner.dashboard import columns
from planner.dashboard.columns import Column, Figure
from planner.models import PER_TOKEN_TARGET_REQUIRED
from workers.datasets import Split, parse_task_data, split_for


@dataclass(frozen=True)
class TaskKind:
    name: str  # PocRequest.Task's value, and roi's task
    slug: str  # names the task's template fragments: planner/dashboard/<slug>/…
    quality_metric: str  # the Measurement field the quality target is set on
    quality_label: Any  # a lazy translation
    # PocRequest fields only this task uses (the form shows them for this task only), with their defaults
    # when left empty; and the ones that must be filled in, with the error when they are not.
    target_defaults: Mapping[str, Any]
    required_targets: Mapping[str, Any]
    whatif_fields: tuple[str, ...]  # what-if figures only this task has
    columns: tuple[Column, ...]  # the candidates table and CSV, in the CSV's order
    sweep_columns: tuple[Figure, ...]  # the batch sweep on the raw-figures page
    quality_rows: tuple[Figure, ...]  # the quality figures on the raw-figures page
    # What the request form says about the task's data and demo (English; planner.form_strings lists them).
    demo_model_label: str
    demo_data_label: str
    demo_model_setting: str  # the setting that holds the demo model's directory
    demo_model_noun: str
    data_files: str
    enough_data: str
    labelled: bool  # whether the data must carry labels the model knows
    quick_candidates: tuple[str, ...] = field(default=())  # checked at first, besides the first hybrid

    @property
    def is_generative(self) -> bool:
        return self.name == roi.CAUSAL_LM

    def demo_model_dir(self) -> Path:
        return getattr(settings, self.demo_model_setting)

    def read_data(self, raw: bytes, filename: str) -> Split:
        """The upload as examples split into training and held-out parts; DataError names what to fix."""
        examples = parse_task_data(raw, filename, require_labels=self.labelled, task=self.name)
        return split_for(examples, self.name)

    def economics_targets(self, poc_request: Any) -> dict[str, Any]:
        """The roi.Economics arguments this task adds to the shared ones."""
        if not self.is_generative:
            return {}
        return {"task": self.name, **{name: getattr(poc_request, name) for name in self.target_defaults}}

    def template(self, fragment: str) -> str:
        """The task's own piece of a page: planner/templates/planner/dashboard/<slug>/<fragment>.html."""
        return f"planner/dashboard/{self.slug}/{fragment}.html"

    # The fragments, as attributes for the templates: the headline's quality and latency cards, the
    # targets among the assumptions, the quality-against-latency chart, and the notes around the table.
    cards_template = property(lambda self: self.template("cards"))
    targets_template = property(lambda self: self.template("targets"))
    pareto_template = property(lambda self: self.template("pareto"))
    intro_template = property(lambda self: self.template("intro"))
    table_note_template = property(lambda self: self.template("table_note"))
    report_note_template = property(lambda self: self.template("report_note"))
    cost_help_template = property(lambda self: self.template("cost_help"))
    sweep_note_template = property(lambda self: self.template("sweep_note"))


CLASSIFICATION = TaskKind(
    name=roi.CLASSIFICATION,
    slug="classification",
    quality_metric="accuracy",
    quality_label=_("Accuracy"),
    target_defaults={"accuracy_floor_pct": Decimal("97")},
    required_targets={"accuracy_floor_pct": forms.Field.default_error_messages["required"]},
    whatif_fields=(),
    columns=columns.CLASSIFICATION_COLUMNS,
    sweep_columns=columns.CLASSIFICATION_SWEEP,
    quality_rows=columns.CLASSIFICATION_QUALITY,
    demo_model_label="Demo: MiniLM-L6 fine-tuned on Wikipedia topics",
    demo_data_label="Demo: Wikipedia lead paragraphs by topic (11 labels)",
    demo_model_setting="DEMO_MODEL_DIR",
    demo_model_noun="demo model",
    data_files="a CSV or JSONL file",
    enough_data="a few thousand examples per label",
    labelled=True,
    # OpenVINO too: the unchanged model on the runtime that is often the fastest on a CPU.
    quick_candidates=("quantize.dynamic-int8", "runtime.openvino"),
)

TEXT_GENERATION = TaskKind(
    name=roi.CAUSAL_LM,
    slug="generation",
    quality_metric="perplexity",
    quality_label=_("Perplexity"),
    target_defaults={
        "per_token_target_ms": None,
        "perplexity_increase_pct": Decimal("10"),
        "output_tokens_per_request": 128,
    },
    required_targets={"per_token_target_ms": PER_TOKEN_TARGET_REQUIRED},
    whatif_fields=("per_token_target_ms", "output_tokens_per_request"),
    columns=columns.GENERATION_COLUMNS,
    sweep_columns=columns.GENERATION_SWEEP,
    quality_rows=columns.GENERATION_QUALITY,
    demo_model_label="Demo: SmolLM2-135M-Instruct, a small chat model",
    demo_data_label="Demo: Wikipedia lead paragraphs, as text",
    demo_model_setting="DEMO_LLM_DIR",
    demo_model_noun="demo LLM",
    data_files="a TXT, JSONL or CSV file",
    enough_data="a few thousand texts",
    labelled=False,
    # Weight-only int8 too: decoding is bound by reading the weights, which it shrinks.
    quick_candidates=("quantize.dynamic-int8", "quantize.weight-only", "runtime.openvino"),
)

TASK_KINDS = {kind.name: kind for kind in (CLASSIFICATION, TEXT_GENERATION)}


def task_kind(name: str | None) -> TaskKind:
    """The task called ``name``; classification for a request filed without one (KeyError for others)."""
    return TASK_KINDS[name or roi.CLASSIFICATION]
