"""Hundreds of malformed inputs thrown at upload parsing and at the request form: never a server error.

(1) Random bytes, CSV-ish and JSONL-ish texts through ``parse_task_data`` and ``split_examples``: only
    ``DataError`` comes out, and a split that succeeds holds every label out and trains on it too.
(2) Random POST payloads (strings, NaN/inf/huge/negative numbers, random files, names, candidates and
    parameter values) to the request form: 200 with the form's errors or 302, never 500, and a request
    row (and an uploaded file) only with a 302.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from plugins import registry
from tests import test_safe_inputs
from tests.test_safe_inputs import media_files, valid_post
from tests.tiny import tiny_csv, tiny_lm_texts
from workers.datasets import DataError, parse_task_data, split_examples

filer = test_safe_inputs.filer  # the fixtures: a client logged in as a user who may file requests
filer_user = test_safe_inputs.filer_user

PARSE_EXAMPLES = 400
FORM_EXAMPLES = 250

# --- inputs --------------------------------------------------------------------------------------------

# No surrogates: the test client must be able to encode what it sends.
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
short_words = st.sampled_from(
    ["a", "b", "ok", "x y", "", " ", "é", "日本", "a,b", '"q"', "\t", "line\nbreak"]
)
labels = st.one_of(st.sampled_from(["a", "b", "c", "", " "]), text)
cells = st.one_of(short_words, text, st.integers().map(str))
headers = st.lists(
    st.one_of(st.sampled_from(["text", "label", "Text", "review", "", "text "]), text), min_size=0, max_size=4
)


@st.composite
def csv_texts(draw) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(draw(headers))
    for row in draw(st.lists(st.lists(cells, max_size=4), max_size=25)):
        writer.writerow(row)
    raw = out.getvalue()
    if draw(st.booleans()):  # break it: cut, splice quotes or junk in somewhere
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from(['"', "\n", ",", "\r", "\x00", "\ufeff", ""])) + raw[at:]
    return raw


@st.composite
def labelled_texts(draw) -> tuple[str, str]:
    """Well-formed labelled data in either format (sometimes with one row broken), so the split is reached
    and often succeeds; returns the suffix that fits and the text."""
    n_labels, per_label = draw(st.integers(1, 3)), draw(st.integers(2, 10))
    words = draw(st.lists(st.text("abcdefghij ", min_size=1, max_size=8), min_size=n_labels * per_label))
    rows = [[f"{text} {i}", "abc"[i % n_labels]] for i, text in enumerate(words)]  # distinct texts
    if rows and draw(st.integers(0, 3)) == 0:
        row = rows[draw(st.integers(0, len(rows) - 1))]
        row[draw(st.integers(0, 1))] = draw(st.sampled_from(["", " ", "x,y", '"', "\n"]))
    if draw(st.booleans()):
        return ".jsonl", "\n".join(json.dumps({"text": t, "label": label}) for t, label in rows)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return ".csv", out.getvalue()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
json_rows = st.one_of(
    st.fixed_dictionaries({"text": st.one_of(text, json_values), "label": st.one_of(labels, json_values)}),
    st.dictionaries(st.sampled_from(["text", "label", "review", "Text"]), json_values, max_size=3),
    json_values,
)


@st.composite
def jsonl_texts(draw) -> str:
    lines = [
        json.dumps(row, ensure_ascii=draw(st.booleans())) for row in draw(st.lists(json_rows, max_size=20))
    ]
    if draw(st.booleans()):
        lines.insert(
            draw(st.integers(0, len(lines))), draw(st.sampled_from(["{", "[[[", "", "  ", "nul", "1e999"]))
        )
    return "\n".join(lines)


encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"])
stems = st.text("abcXYZ019-_ .é日", min_size=1, max_size=20)
suffixes = st.sampled_from([".csv", ".jsonl", ".CSV", ".ndjson", ".txt", ".csv.gz", ""])


@st.composite
def files(draw) -> tuple[str, bytes]:
    """A file name and its bytes: junk, CSV-ish or JSONL-ish text in some encoding, or labelled data."""
    kind = draw(st.sampled_from(["bytes", "csv", "jsonl", "labelled", "labelled"]))
    if kind == "bytes":
        return draw(stems) + draw(suffixes), draw(st.binary(max_size=600))
    if kind == "labelled":
        suffix, content = draw(labelled_texts())
        encoding = "utf-8"
    else:
        suffix, content = f".{kind}", draw(csv_texts() if kind == "csv" else jsonl_texts())
        encoding = draw(encodings)
    if draw(st.integers(0, 5)) == 0:
        suffix = draw(suffixes)  # the wrong name for what it holds
    return draw(stems) + suffix, content.encode(encoding, errors="replace")


# --- (1) parsing and splitting ------------------------------------------------------------------------


@settings(max_examples=PARSE_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file=files())
def test_parsing_and_splitting_raise_only_data_errors(file):
    name, raw = file
    try:
        split = split_examples(parse_task_data(raw, name, require_labels=bool(len(raw) % 2)))
    except DataError as exc:
        assert str(exc)
        event(f"refused: {str(exc).split(';')[0].split(':')[-1].strip()[:40]}")
        return
    event("split")
    assert split.labels and len(split.labels) >= 2
    assert {e.label for e in split.eval} == {e.label for e in split.train} == set(split.labels)
    assert not {e.text for e in split.eval} & {e.text for e in split.train}


# --- (2) the request form -----------------------------------------------------------------------------

bad_numbers = st.one_of(
    st.sampled_from(
        ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-400", "-1", "0", "-0", "0.0001"]
        + ["9" * 40, "1" + "0" * 400, "", " ", "1,5", "1_000", "0x10", "１２", "12abc", "--1", "1e", "."]
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    text,
)
NUMBER_FIELDS = [
    "p95_target_ms",
    "accuracy_floor_pct",
    "requests_per_day",
    "peak_factor",
    "target_utilisation",
    "horizon_months",
    "engineering_hours",
    "engineering_rate",
    "per_token_target_ms",
    "output_tokens_per_request",
    "perplexity_increase_pct",
]


def _param_fields() -> list[str]:
    return [f"param:{name}:{p.name}" for name, cls in registry.techniques().items() for p in cls.params]


def _offered_candidates() -> list[str]:
    return ["quantize.dynamic-int8", "prune.layers → quantize.dynamic-int8", "distill.kd", "quantize.half"]


def _upload(name: str, raw: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, raw)


def _mutations() -> dict[str, st.SearchStrategy[dict]]:
    """Per field, what may replace its valid value: junk, nothing (None: left out), or another valid value."""
    steps = st.sampled_from(sorted(registry.techniques()) + ["no.such", "", "→", ">"])
    pipelines = st.lists(st.lists(steps, max_size=4).map(" → ".join), max_size=4).map("\n".join)
    params = st.lists(st.sampled_from(_param_fields()), min_size=1, max_size=4, unique=True).flatmap(
        lambda names: st.fixed_dictionaries(
            {
                n: st.one_of(bad_numbers, st.sampled_from(["on", "true", "bf16", "fp16", "4", "8", "0.5"]))
                for n in names
            }
        )
    )
    one = {
        **{field: bad_numbers for field in NUMBER_FIELDS},
        "title": st.one_of(text, st.just("x" * 300), st.just("a\x00b"), st.just("Tickets, int8")),
        "model_ref": st.sampled_from(["demo", "../tiny-bert", "/etc", "tiny-bert/", "", "x", "tiny-llama"]),
        "task": st.sampled_from(["causal-lm", "sequence-classification", "", "CAUSAL-LM", "x"]),
        "dataset_ref": st.sampled_from(["demo", "upload", "", "other"]),
        "hardware": st.one_of(bad_numbers, st.sampled_from(["1", "2", "3", "9999"])),
        "currency": st.sampled_from(["USD", "EUR", "JPY", "usd", "", "XXX"]),
        "candidates": st.lists(st.one_of(st.sampled_from(_offered_candidates()), text), max_size=4),
        "custom_pipelines": st.one_of(pipelines, text),
        "dataset_upload": files().map(lambda file: _upload(*file)),
    }
    mutations = {
        field: st.one_of(values, st.none()).map(lambda v, f=field: {f: v}) for field, values in one.items()
    }
    mutations["params"] = params
    return mutations


VALID_NUMBERS = {
    "p95_target_ms": ["0.1", "1", "50", "600000"],
    "accuracy_floor_pct": ["1", "50.5", "100"],
    "requests_per_day": ["1", "86400", "1000000000000"],
    "peak_factor": ["1", "2.5", "100"],
    "target_utilisation": ["0.05", "0.7", "1"],
    "horizon_months": ["1", "36", "120"],
    "engineering_hours": ["0", "0.5", "100000"],
    "engineering_rate": ["0", "99.99", "1000000"],
}
# A text-generation request: its own model, data and targets.
VALID_GENERATION = {
    "per_token_target_ms": ["0.1", "40", "60000"],
    "output_tokens_per_request": ["", "1", "128", "32768"],
    "perplexity_increase_pct": ["", "0", "10", "1000"],
}


@st.composite
def valid_changes(draw) -> dict:
    """Other acceptable values, so that accepted submissions vary too."""
    overrides = {
        field: draw(st.sampled_from(values)) for field, values in VALID_NUMBERS.items() if draw(st.booleans())
    }
    if draw(st.booleans()):
        overrides["title"] = draw(text.filter(lambda t: t.strip() and "\x00" not in t))
    generative = draw(st.integers(0, 3)) == 0
    task = "causal-lm" if generative else "sequence-classification"
    if generative:
        overrides |= {
            "task": task,
            "model_ref": "tiny-llama",
            "accuracy_floor_pct": draw(st.sampled_from(["", "97"])),
        }
        overrides |= {field: draw(st.sampled_from(values)) for field, values in VALID_GENERATION.items()}
        texts = "\n".join(tiny_lm_texts(draw(st.integers(10, 40)), seed=draw(st.integers(0, 99))))
        name = draw(st.sampled_from(["replies.txt", "replies.csv"]))
        overrides["dataset_upload"] = _upload(
            name, (texts if name.endswith(".txt") else "text\n" + texts).encode()
        )
    if draw(st.booleans()) or generative:
        plan = registry.default_plan(device="cpu", task=task)
        overrides["candidates"] = draw(
            st.lists(st.sampled_from([" → ".join(p) for p in plan]), unique=True, max_size=3)
        )
    if draw(st.booleans()) and not generative:
        raw = tiny_csv(per_label=draw(st.integers(4, 12)), seed=draw(st.integers(0, 99)))
        if draw(st.booleans()):
            rows = list(csv.reader(io.StringIO(raw.decode())))[1:]
            raw = "\n".join(json.dumps({"text": t, "label": label}) for t, label in rows).encode()
            overrides["dataset_upload"] = _upload("tickets.jsonl", raw)
        else:
            overrides["dataset_upload"] = _upload("tickets.csv", raw)
    return overrides


@st.composite
def payloads(draw) -> dict:
    """Overrides of a valid submission: other valid values, or a few fields dropped or replaced by junk."""
    if draw(st.integers(0, 3)) == 0:
        return draw(valid_changes())
    mutations = _mutations()
    overrides: dict = {}
    for name in draw(st.lists(st.sampled_from(sorted(mutations)), min_size=1, max_size=6, unique=True)):
        overrides.update(draw(mutations[name]))
    return overrides


@pytest.fixture
def no_broker(monkeypatch):
    from workers.app import app

    monkeypatch.setattr(app, "send_task", lambda *args, **kwargs: None)


@settings(
    max_examples=FORM_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(overrides=payloads())
def test_random_posts_to_the_request_form_never_cause_a_server_error(
    filer, cpu_hardware, tiny_model_dir, tiny_llama_dir, no_broker, overrides
):
    from planner.models import PocRequest

    if "dataset_upload" not in overrides:  # a fresh file per example: an upload is read once
        overrides["dataset_upload"] = _upload("tickets.csv", tiny_csv())
    rows, files = PocRequest.objects.count(), len(media_files())
    response = filer.post(reverse("planner:request-create"), valid_post(cpu_hardware, **overrides))
    event(f"status {response.status_code}")
    assert response.status_code in (200, 302)
    if response.status_code == 302:
        assert PocRequest.objects.count() == rows + 1
        assert len(media_files()) <= files + 1
    else:
        assert 'class="error"' in response.content.decode()
        assert PocRequest.objects.count() == rows and len(media_files()) == files
