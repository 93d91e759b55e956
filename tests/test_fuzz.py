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


# --- model-aware parameters, pipeline shapes and hostile model directories --------------------------------

MODEL_EXAMPLES = 200
_junk_layers = st.one_of(
    st.lists(st.integers(-3, 70), max_size=60).map(lambda xs: ",".join(map(str, xs))),
    st.sampled_from(["", "0,x", "1.5", "0,,1", " 1 , 2 ", "١", "1_0", "0x1", "9" * 30, "0;1", "-0"]),
    text,
)
_layer_params = st.one_of(
    st.fixed_dictionaries(
        {
            "technique": st.just("distill.kd"),
            "params": st.fixed_dictionaries(
                {"student_layers": st.one_of(st.integers(-2, 60), bad_numbers), "layers": _junk_layers}
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "technique": st.just("prune.layers"),
            "params": st.fixed_dictionaries(
                {
                    "keep": st.one_of(st.integers(-2, 60), bad_numbers),
                    "strategy": st.sampled_from(["top", "bottom", "alternate", "pattern", "importance", "x"]),
                    "pattern": _junk_layers,
                }
            ),
        }
    ),
)


@settings(max_examples=MODEL_EXAMPLES, deadline=None)
@given(layers=st.integers(1, 64), steps=st.lists(_layer_params, min_size=1, max_size=3))
def test_layer_parameters_against_random_models_raise_only_param_errors(layers, steps):
    from plugins.base import ParamError
    from plugins.distill import student_layer_indices
    from plugins.model_info import ModelInfo
    from plugins.prune.layers import _parse_pattern

    info = ModelInfo(
        task="sequence-classification", model_type="bert", layers=layers, hidden_size=8, vocab_size=9
    )
    try:
        cleaned = registry.validate_pipeline(
            steps, device="cpu", task="sequence-classification", model_info=info
        )
    except ParamError as exc:
        event("refused")
        assert str(exc).startswith("step ")
        return
    event("accepted")
    total = layers
    for step in cleaned:  # what the run will do is possible on the model each step receives
        params = step["params"]
        if step["technique"] == "distill.kd":
            kept = student_layer_indices(
                total, student_layers=params["student_layers"], layers=params["layers"]
            )
        elif params["strategy"] == "pattern":
            kept = _parse_pattern(params["pattern"])
        else:
            kept = list(range(params["keep"]))
        assert kept and len(kept) < total and len(set(kept)) == len(kept) and max(kept) < total
        total = len(kept)


@settings(max_examples=MODEL_EXAMPLES, deadline=None)
@given(names=st.lists(st.sampled_from(sorted(registry.techniques())), max_size=12))
def test_random_pipelines_keep_to_the_step_limit_and_the_order(names):
    from plugins.base import ParamError

    try:
        registry.validate_pipeline(
            [{"technique": n} for n in names], device="cpu", task="sequence-classification"
        )
    except ParamError:
        event("refused")
        return
    event("accepted")
    families = [registry.get(n).family for n in names]
    assert len(names) <= registry.MAX_PIPELINE_STEPS
    # A quantize or a runtime step ends the pipeline, and there is at most one of the two.
    assert families.count("quantize") + families.count("runtime") <= 1
    assert "runtime" not in families[:-1] and "quantize" not in families[:-1]
    assert all(a != b for a, b in zip(names, names[1:], strict=False))
    repeated = {n for n in names if names.count(n) > 1}
    assert all(registry.get(n).family in registry.REPEATABLE_FAMILIES for n in repeated)


_json_values = st.one_of(
    st.integers(-(2**63), 2**63),
    st.sampled_from(
        [0, -1, 1, 2, 2**31, 10**6, 10**9, 3 * 10**9, True, False, None, 1.5, 768.0, float("1e308")]
    ),
    text,
    st.lists(st.one_of(st.integers(), text), max_size=3),
    st.dictionaries(text, st.integers(), max_size=2),
)
_config_keys = st.sampled_from(
    [
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "type_vocab_size",
        "num_key_value_heads",
        "head_dim",
        "num_labels",
        "architectures",
        "model_type",
        "torch_dtype",
        "n_layer",
        "dim",
    ]
)


@pytest.fixture(scope="module")
def scratch_model(tiny_model_dir, tmp_path_factory):
    import shutil

    path = tmp_path_factory.mktemp("hostile") / "model"
    shutil.copytree(tiny_model_dir, path)
    return path


@settings(
    max_examples=MODEL_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=st.dictionaries(_config_keys, _json_values, min_size=1, max_size=4))
def test_hostile_configs_raise_only_model_load_errors(scratch_model, tiny_model_dir, changes):
    from plugins.artifacts import ModelLoadError, check_model_dir
    from plugins.model_info import DIMENSIONS, ModelInfo

    config = {**json.loads((tiny_model_dir / "config.json").read_text()), **changes}
    (scratch_model / "config.json").write_text(json.dumps(config))
    try:
        checked = check_model_dir(scratch_model, task="sequence-classification", max_bytes=10**6)
    except ModelLoadError as exc:
        event("refused")
        assert "model" in str(exc)
        return
    event("accepted")
    for dimension in DIMENSIONS:
        for key in dimension.names:
            value = checked.get(key)
            assert value is None or (type(value) is int and 1 <= value <= dimension.maximum), (key, value)
    info = ModelInfo.from_config(checked, task="sequence-classification")
    assert 1 <= info.layers <= 1024 and info.hidden_size * info.vocab_size <= 10**6


_tensor_entries = st.fixed_dictionaries(
    {
        "dtype": st.one_of(st.sampled_from(["F32", "F16", "BF16", "I8", "U8"]), text, st.integers()),
        "shape": st.one_of(st.lists(st.integers(-2, 2**40), max_size=4), text, st.none()),
        "data_offsets": st.one_of(st.lists(st.integers(-2, 2**40), max_size=3), text),
    }
)


@settings(
    max_examples=MODEL_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.one_of(
        st.binary(max_size=64),
        st.dictionaries(text, _tensor_entries, max_size=3).map(lambda h: json.dumps(h).encode()),
    ),
    length_delta=st.integers(-8, 8),
    data=st.binary(max_size=64),
)
def test_random_safetensors_headers_raise_only_model_load_errors(
    scratch_model, tiny_model_dir, header, length_delta, data
):
    import struct

    from plugins.artifacts import ModelLoadError, check_model_dir

    (scratch_model / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    length = max(0, len(header) + length_delta)
    (scratch_model / "model.safetensors").write_bytes(struct.pack("<Q", length) + header + data)
    try:
        check_model_dir(scratch_model, task="sequence-classification")
    except ModelLoadError as exc:
        event("refused")
        assert "model.safetensors" in str(exc) or "config.json" in str(exc)
    else:
        raise AssertionError("a random header cannot hold the tiny model's weights")


# --- the request form's shapes: checkboxes a client leaves out, typed pipelines with malformed arrows -------

SHAPE_EXAMPLES = 60
INT8 = "quantize.dynamic-int8"
DROP_INT8 = "prune.layers → quantize.dynamic-int8"
_arrows = st.sampled_from(["→", "->", ">", " → ", " -> ", "  >  "])
_segments = st.one_of(
    st.sampled_from(sorted(registry.techniques())),
    st.sampled_from(["", "  ", "prune.ffn(amount=0.3)", " quantize.half() ", "(amount=0.3)", " ( ) "]),
)


@st.composite
def typed_lines(draw) -> tuple[str, list[str]]:
    """A typed pipeline whose steps may be empty (an arrow doubled, or at either end), and its segments."""
    segments = draw(st.lists(_segments, min_size=1, max_size=6))
    line = segments[0]
    for segment in segments[1:]:
        line += draw(_arrows) + segment
    return line, segments


def _first_empty(segments: list[str]) -> int | None:
    """The position (from 1) of the first step without a technique name, None when every step has one."""
    for position, segment in enumerate(segments, start=1):
        if not segment.partition("(")[0].strip():
            return position
    return None


@settings(max_examples=PARSE_EXAMPLES, deadline=None)
@given(typed=typed_lines())
def test_typed_pipelines_are_read_or_refused_at_the_first_empty_step(typed):
    from planner.pipeline_fields import PipelineSyntaxError, parse_steps

    line, segments = typed
    empty = _first_empty(segments)
    if len(segments) == 1 and not segments[0].strip():
        assert parse_steps(line) == []
        return
    try:
        steps = parse_steps(line)
    except PipelineSyntaxError as exc:
        event("refused")
        assert empty is not None and exc.step == empty, (line, exc.step, str(exc))
        assert exc.at_line(3).startswith(f"line 3, step {empty}: ")
        return
    event("read")
    assert empty is None, (line, steps)
    assert [name for name, _params in steps] == [s.partition("(")[0].strip() for s in segments]


_box_states = st.sampled_from(["omitted", "ticked", "unticked", "ticked and marked"])
_step_states = st.sampled_from([None, "", "true", "false"])


def _bool_params() -> list[tuple[str, str, bool]]:
    return [
        (name, p.name, bool(p.default))
        for name, cls in registry.techniques().items()
        for p in cls.params
        if p.type is bool
    ]


@settings(
    max_examples=SHAPE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    boxes=st.fixed_dictionaries({f"{t}:{p}": _box_states for t, p, _default in _bool_params()}),
    steps=st.fixed_dictionaries({p: _step_states for t, p, _default in _bool_params() if t == INT8}),
)
def test_checkboxes_left_out_take_their_defaults_and_shown_ones_their_state(
    filer, cpu_hardware, tiny_model_dir, no_broker, boxes, steps
):
    """Each yes/no parameter left out, ticked, or shown and unticked, and the hybrid's own int8 step fields
    left out, empty (as above) or set: the filed pipelines hold exactly what was meant."""
    from planner.forms import PocRequestForm
    from planner.models import PocRequest

    data = valid_post(cpu_hardware, candidates=[INT8, DROP_INT8, "runtime.onnxruntime"])
    data["param:prune.layers:keep"] = "1"  # the tiny model has 2 layers
    expected: dict[str, bool] = {}
    for technique, param, default in _bool_params():
        name = f"param:{technique}:{param}"
        data.pop(name, None)
        state = boxes[f"{technique}:{param}"]
        if state in ("ticked", "ticked and marked"):
            data[name] = "on"
        if state in ("unticked", "ticked and marked"):
            data[name + ":shown"] = "1"
        expected[f"{technique}:{param}"] = {"omitted": default, "unticked": False}.get(state, True)
    n = PocRequestForm(teams=None).candidate_labels.index(DROP_INT8)
    for param, value in steps.items():
        if value is not None:
            data[PocRequestForm.step_field_name(n, 1, param)] = value
    response = filer.post(reverse("planner:request-create"), data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    filed = {
        registry.pipeline_label(c.pipeline): c.pipeline
        for c in PocRequest.objects.latest("pk").candidates.all()
    }
    for technique, param, _default in _bool_params():
        if technique in filed:
            assert filed[technique][0]["params"][param] is expected[f"{technique}:{param}"], (
                technique,
                param,
            )
    for param, value in steps.items():
        own = {"true": True, "false": False}.get(value or "", expected[f"{INT8}:{param}"])
        assert filed[DROP_INT8][1]["params"][param] is own, (param, value)


@settings(
    max_examples=SHAPE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=st.lists(typed_lines(), min_size=1, max_size=3))
def test_malformed_arrows_in_the_form_are_refused_with_their_line_and_step(
    filer, cpu_hardware, tiny_model_dir, no_broker, lines
):
    import html

    from planner.models import PocRequest

    rows, files = PocRequest.objects.count(), len(media_files())
    text = "\n".join(line for line, _segments in lines)
    response = filer.post(
        reverse("planner:request-create"), valid_post(cpu_hardware, candidates=[], custom_pipelines=text)
    )
    assert response.status_code in (200, 302)
    body = html.unescape(response.content.decode())
    for number, (_line, segments) in enumerate(lines, start=1):
        empty = _first_empty(segments)
        if empty is not None and not (len(segments) == 1 and not segments[0].strip()):
            event("an empty step")
            assert response.status_code == 200 and f"line {number}, step {empty}: " in body
    if response.status_code == 200:
        assert PocRequest.objects.count() == rows and len(media_files()) == files
