"""Bad input is explained next to its field or on the page: never a server error, nothing half-saved.

Uploads (size, encoding, CSV/JSONL structure with line numbers, labels), model references (the models
folder, links, pickle weights, remote code, architectures), numbers (NaN, infinities, huge, negative),
CSRF on every form, and the production settings passing ``check --deploy``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from planner.forms import local_model_choices
from planner.models import Candidate, PocRequest
from plugins.base import Example
from tests.planner.test_views import valid_post
from tests.tiny import tiny_csv
from workers.datasets import MAX_LINE_CHARS, DataError, parse_task_data, split_examples

ROOT = Path(__file__).resolve().parent.parent
CREATE = "planner:request-create"


@pytest.fixture
def filer_user(user):
    """The test user with what filing a request takes: the requester role and a team."""
    from django.contrib.auth.models import Group

    from planner.models import Team

    user.groups.add(Group.objects.get(name="requester"))
    if not user.teams.exists():
        Team.objects.create(name="Safe inputs").members.add(user)
    return user


@pytest.fixture
def filer(client, filer_user):
    """A client logged in as a user who may file requests."""
    client.force_login(filer_user)
    return client


def media_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def field_errors(response, field: str) -> str:
    """The text of one field's block on the re-rendered form."""
    body = response.content.decode()
    start = body.index(f'id="field-{field}"')
    end = body.find('id="field-', start + 10)
    return body[start : end if end > 0 else len(body)]


def assert_refused(client, data, field: str, message: str) -> None:
    """The POST re-renders the form with ``message`` next to ``field``; no row and no file is written."""
    files_before = media_files()
    response = client.post(reverse(CREATE), data)
    assert response.status_code == 200
    section = field_errors(response, field)
    assert 'class="error"' in section, section
    assert re.search(message, section), section
    assert not PocRequest.objects.exists() and not Candidate.objects.exists()
    assert media_files() == files_before


def upload(raw: bytes, name: str = "data.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, raw)


# --- uploaded task data: the parser -------------------------------------------------------------------


def _rows(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(
    ("raw", "name", "message"),
    [
        (
            b"text,label\nok,a\nbad\xff,b\n",
            "d.csv",
            r"^Line 3: the file is not UTF-8 text .*save it as UTF-8",
        ),
        (
            "text,label\nok,a\n".encode("utf-16"),
            "d.csv",
            r"^Line 1: the file is UTF-16 text; save it as UTF-8",
        ),
        (b"text,label\nok,a\nb\x00d,b\n", "d.csv", r"^Line 3: the file holds a NUL byte .*binary"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "d.csv", r"^Line 3: the file holds a NUL byte"),
        (b"", "d.csv", r"^The file is empty; upload a CSV with the header 'text,label'"),
        (b"\n  \n", "d.jsonl", r"^The file is empty"),
        (b"text,label\n", "d.csv", r"^Line 1: the CSV has a header but no examples below it"),
        (b"\n\ntext,label\n\n", "d.csv", r"^Line 3: the CSV has a header but no examples"),
        (
            _rows("review,stars", "good,5"),
            "d.csv",
            r"^Line 1: .*needs a 'text' column .*found: review, stars",
        ),
        (
            _rows("Text,Label", "good,a"),
            "d.csv",
            r"missing: text; found: Text, Label\. Column names are case-sensitive: rename Text to text",
        ),
        (_rows("text,label,text", "a,b,c"), "d.csv", r"^Line 1: the header repeats the column text"),
        (
            _rows("text,label", "a,x", "b,y", "c, with comma,z"),
            "d.csv",
            r"^Line 4: 3 values, but the header names 2",
        ),
        (_rows("text,label", "a,x", "just text"), "d.csv", r"^Line 3: 1 values?, but the header names 2 col"),
        (
            _rows("text,label", "a,x", '"unclosed,y', "c,z"),
            "d.csv",
            r"^Line \d+: .*values|^Line \d+: the CSV",
        ),
        (b'{"text": "a", "label": "x"}\n\n{oops\n', "d.jsonl", r"^Line 3: not valid JSON .* at column 2"),
        (b'["a", "b"]\n', "d.jsonl", r"^Line 1: expected an object"),
        (b'{"text": 5, "label": "x"}\n', "d.jsonl", r"^Line 1: 'text' must be a string"),
        (b'{"text": "a", "label": 1.5}\n', "d.jsonl", r"^Line 1: 'label' must be a string or an integer"),
        (b'{"text": "a", "label": "x"}\n{"review": "b"}\n', "d.jsonl", r"^Line 2: .*found: review"),
        (b'{"text": "a\\ud800", "label": "x"}\n', "d.jsonl", r"^Line 1: .*invalid character escape"),
        (b'{"text": "a", "label": ' + b"9" * 5000 + b"}\n", "d.jsonl", r"^Line 1: not valid JSON"),
        (b"[" * 100_000, "d.jsonl", r"^Line 1: not valid JSON"),
        (b"text,label\na,b\n", "d.xlsx", r"^Upload a .csv or .jsonl file; got 'd.xlsx'"),
    ],
)
def test_a_bad_file_is_refused_with_the_line_and_what_to_do(raw, name, message):
    with pytest.raises(DataError, match=message):
        parse_task_data(raw, name)


@pytest.mark.parametrize("name", ["long.csv", "long.jsonl"])
def test_an_extremely_long_line_is_refused_with_the_limit(name):
    long_text = "word " * (MAX_LINE_CHARS // 5 + 1)
    raw = (
        _rows("text,label", "short,a", f"{long_text},b")
        if name.endswith(".csv")
        else _rows(json.dumps({"text": "short", "label": "a"}), json.dumps({"text": long_text, "label": "b"}))
    )
    with pytest.raises(
        DataError, match=rf"^Line [23] is [\d,]+ characters long; the limit is {MAX_LINE_CHARS:,}"
    ):
        parse_task_data(raw, name)


def test_labels_are_required_with_the_line_of_the_first_missing_one():
    with pytest.raises(DataError, match=r"^Line 1: .*missing: label; found: text"):
        parse_task_data(_rows("text", "a"), "d.csv", require_labels=True)
    with pytest.raises(DataError, match=r"^Line 3: the example has no label; .*fill it in or remove the row"):
        parse_task_data(_rows("text,label", "a,x", "b,", "c,y"), "d.csv", require_labels=True)
    with pytest.raises(DataError, match=r"^Line 2: .*missing: label; found: text"):
        parse_task_data(_rows('{"text": "a", "label": "x"}', '{"text": "b"}'), "d.jsonl", require_labels=True)


def test_empty_rows_and_crlf_line_ends_are_fine_and_lines_are_counted_like_an_editor():
    raw = b"text,label\r\n\r\na,x\r\n,\r\n   \r\nb,y\r\n"
    assert parse_task_data(raw, "d.csv") == [Example("a", "x"), Example("b", "y")]
    with pytest.raises(DataError, match=r"^Line 4: 3 values"):
        parse_task_data(b"text,label\r\n\r\na,x\r\nb,y,z\r\n", "d.csv")


def test_a_json_string_holding_a_line_separator_is_one_line():
    rows = [{"text": "first\u2028half", "label": "x"}, {"text": "b", "label": "y"}]
    raw = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    assert parse_task_data(raw, "d.jsonl") == [Example("first\u2028half", "x"), Example("b", "y")]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [(f"t{i}", "x") for i in range(8)],
            r"at least two labels; found only x\. Add examples of the other",
        ),
        ([(f"t{i}", "x") for i in range(5)] + [("u", "y"), ("v", "y")], r"too few: 'y' \(2\)\. Add examples"),
        ([(f"t{i}", "x") for i in range(5)] + [("u", "y")] * 4, r"4 distinct examples .*too few: 'y' \(1\)"),
        ([(f"t{i}", None) for i in range(5)], r"The data has no labels; .*needs a 'label' column"),
    ],
)
def test_a_split_that_cannot_hold_out_every_label_is_refused(rows, message):
    with pytest.raises(DataError, match=message):
        split_examples([Example(t, label) for t, label in rows])


@pytest.mark.parametrize("per_label", [4, 5, 7, 20])
@pytest.mark.parametrize("eval_fraction", [0.01, 0.2, 0.5, 0.99])
def test_every_held_out_label_is_also_trained_on(per_label, eval_fraction):
    examples = [Example(f"{label} {i}", label) for label in ("a", "b", "c") for i in range(per_label)]
    split = split_examples(examples, eval_fraction=eval_fraction)
    assert {e.label for e in split.eval} == {e.label for e in split.train} == set(split.labels)
    assert not {e.text for e in split.eval} & {e.text for e in split.train}


# --- uploaded task data: through the form -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name", "message"),
    [
        (b"review,stars\nok,5\n", "d.csv", r"needs a &#x27;text&#x27; column .*found: review, stars"),
        (b"text,label\nok,a\nbad\xff,b\n", "d.csv", r"Line 3: the file is not UTF-8"),
        (b"\x00\x01\x02binary", "d.csv", r"Line 1: the file holds a NUL byte"),
        (b"text,label\n", "d.csv", r"Line 1: the CSV has a header but no examples"),
        (b'{"text": "a", "label": "x"}\n{"text": \n', "d.jsonl", r"Line 2: not valid JSON"),
        (b"text\nonly text\n", "d.csv", r"missing: label; found: text"),
        (tiny_csv(per_label=20) + b"unlabelled row,\n", "d.csv", r"Line 62: the example has no label"),
        (
            tiny_csv(per_label=3),
            "d.csv",
            r"at least 4 distinct examples .*too few: &#x27;cooking&#x27; \(3\)",
        ),
        (
            _rows("text,label", *[f"t{i},sports" for i in range(8)]),
            "d.csv",
            r"at least two labels; found only",
        ),
    ],
)
def test_bad_task_data_is_explained_next_to_the_upload(
    filer, cpu_hardware, tiny_model_dir, sent, raw, name, message
):
    data = valid_post(cpu_hardware, dataset_upload=upload(raw, name))
    assert_refused(filer, data, "dataset_upload", message)
    assert not sent


def test_an_upload_over_the_size_limit_is_refused_with_the_limit(
    filer, cpu_hardware, tiny_model_dir, sent, settings
):
    settings.DATA_UPLOAD_MAX_BYTES = 1024 * 1024
    big = tiny_csv() + b"".join(b"filler text number %d,sports\n" % i for i in range(60_000))
    assert len(big) > settings.DATA_UPLOAD_MAX_BYTES
    data = valid_post(cpu_hardware, dataset_upload=upload(big))
    assert_refused(filer, data, "dataset_upload", r"The file is [\d.]+ MiB; the limit is 1 MiB")


def test_labels_the_model_does_not_know_are_refused_and_named(filer, cpu_hardware, tiny_model_dir, sent):
    rows = [(text, "finance" if label == "cooking" else label) for text, label in _tiny_rows()]
    data = valid_post(cpu_hardware, dataset_upload=upload(_csv(rows)))
    assert_refused(
        filer,
        data,
        "dataset_upload",
        r"The model tiny-bert does not know the labels finance; it predicts: cooking, sports, weather\. "
        r"Use data labelled with the model&#x27;s labels",
    )


def test_the_demo_data_on_a_model_with_other_labels_is_refused(filer, cpu_hardware, tiny_model_dir, sent):
    data = valid_post(cpu_hardware, dataset_ref="demo", dataset_upload=None)
    assert_refused(filer, data, "dataset_ref", r"does not know the labels Arts, .* and \d+ more")


def _tiny_rows() -> list[tuple[str, str]]:
    from tests.tiny import tiny_texts

    return tiny_texts(per_label=20)


def _csv(rows) -> bytes:
    return _rows("text,label", *[f"{text},{label}" for text, label in rows])


def test_a_rejected_post_with_a_valid_upload_writes_no_file_and_no_row(
    filer, cpu_hardware, tiny_model_dir, sent
):
    """The upload itself is fine; a bad number elsewhere must still leave MEDIA_ROOT and the tables alone."""
    assert_refused(filer, valid_post(cpu_hardware, p95_target_ms="nan"), "p95_target_ms", "Enter a number")


def test_an_accepted_post_saves_exactly_one_request_and_its_file(filer, cpu_hardware, tiny_model_dir, sent):
    before = media_files()
    response = filer.post(reverse(CREATE), valid_post(cpu_hardware))
    assert response.status_code == 302
    assert PocRequest.objects.count() == 1 and len(media_files()) == len(before) + 1


# --- model references ---------------------------------------------------------------------------------


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    """Copies of the tiny model under MODELS_ROOT (or elsewhere), removed afterwards."""
    made: list[Path] = []

    def copy(name: str, *, config: dict | None = None, outside: bool = False, drop: tuple[str, ...] = ()):
        path = (tmp_path if outside else settings.MODELS_ROOT) / name
        shutil.copytree(tiny_model_dir, path)
        made.append(path)
        for file in drop:
            (path / file).unlink()
        if config is not None:
            body = json.loads((path / "config.json").read_text())
            body.update(config)
            (path / "config.json").write_text(json.dumps({k: v for k, v in body.items() if v is not None}))
        return path

    yield copy
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def link(tmp_path):
    """Symlinks under MODELS_ROOT, removed afterwards."""
    made: list[Path] = []

    def make(name: str, target: Path) -> Path:
        path = settings.MODELS_ROOT / name
        path.symlink_to(target, target_is_directory=target.is_dir())
        made.append(path)
        return path

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def test_a_link_out_of_the_models_folder_is_neither_offered_nor_accepted(
    filer, cpu_hardware, model_copy, link, sent
):
    link("escape", model_copy("elsewhere", outside=True))
    link("etc", Path("/etc"))
    assert "escape" not in dict(local_model_choices()) and "etc" not in dict(local_model_choices())
    body = filer.get(reverse(CREATE)).content.decode()
    assert 'value="escape"' not in body and 'value="tiny-bert"' in body
    for ref in ("escape", "etc", "../../etc", "/etc", "tiny-bert/../../..", "..", "."):
        assert_refused(filer, valid_post(cpu_hardware, model_ref=ref), "model_ref", "Select a valid")


def test_a_link_inside_the_models_folder_is_accepted(filer, cpu_hardware, tiny_model_dir, link, sent):
    link("alias", tiny_model_dir)
    assert "alias" in dict(local_model_choices())
    response = filer.post(reverse(CREATE), valid_post(cpu_hardware, model_ref="alias"))
    assert response.status_code == 302


def test_a_model_file_linked_from_outside_is_refused(filer, cpu_hardware, model_copy, sent, tmp_path):
    path = model_copy("linked-weights")
    outside = tmp_path / "weights.safetensors"
    (path / "model.safetensors").rename(outside)
    (path / "model.safetensors").symlink_to(outside)
    assert_refused(
        filer,
        valid_post(cpu_hardware, model_ref="linked-weights"),
        "model_ref",
        r"links to files outside the models folder \(model.safetensors\); copy those files",
    )


@pytest.mark.parametrize(
    ("name", "setup", "message"),
    [
        (
            "pickled",
            {"drop": ("model.safetensors",), "pickle": True},
            r"only pickle weights \(pytorch_model.bin\), which can run code",
        ),
        ("no-weights", {"drop": ("model.safetensors",)}, r"has no \*.safetensors weights"),
        (
            "bad-json",
            {"raw_config": "{not json"},
            r"config.json is not valid JSON \(line 1: .*save the model again",
        ),
        ("list-json", {"raw_config": "[1, 2]"}, r"config.json must hold a JSON object"),
        ("binary-json", {"raw_config": b"\xff\xfe{"}, r"config.json cannot be read"),
        ("no-type", {"config": {"model_type": None}}, r"config.json has no model_type"),
        (
            "remote-code",
            {"config": {"auto_map": {"AutoModelForSequenceClassification": "modeling_x.XForSeq"}}},
            r"needs its own Python code to load \(config.json has an auto_map\).*trust_remote_code stays off",
        ),
        (
            "remote-tokenizer",
            {"tokenizer_config": {"auto_map": {"AutoTokenizer": ["tok.XTokenizer", None]}}},
            r"tokenizer_config.json has an auto_map",
        ),
        (
            "causal",
            {"config": {"architectures": ["LlamaForCausalLM"]}},
            r"is a LlamaForCausalLM \(a text generator, .*end with ForSequenceClassification",
        ),
        ("base", {"config": {"architectures": ["BertModel"]}}, r"a base model without a task head"),
        (
            "unknown-type",
            {"config": {"model_type": "no-such-architecture"}},
            r"cannot build a text classifier for the model type &#x27;no-such-architecture&#x27;.*such as bert",
        ),
    ],
)
def test_an_unusable_model_is_explained_next_to_the_model_field(
    filer, cpu_hardware, model_copy, sent, name, setup, message
):
    path = model_copy(name, config=setup.get("config"), drop=setup.get("drop", ()))
    if setup.get("pickle"):
        (path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    if "raw_config" in setup:
        raw = setup["raw_config"]
        (path / "config.json").write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    if "tokenizer_config" in setup:
        body = json.loads((path / "tokenizer_config.json").read_text())
        (path / "tokenizer_config.json").write_text(json.dumps({**body, **setup["tokenizer_config"]}))
    assert name in dict(local_model_choices())
    assert_refused(filer, valid_post(cpu_hardware, model_ref=name), "model_ref", message)


def test_checking_a_model_reads_its_files_without_importing_torch_or_transformers(tiny_model_dir):
    code = (
        "import sys; from pathlib import Path; from plugins.artifacts import check_model_dir;"
        f"config = check_model_dir(Path({str(tiny_model_dir)!r}), task='sequence-classification');"
        "assert config['model_type'] == 'bert';"
        "sys.exit(1 if {'torch', 'transformers'} & set(sys.modules) else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_trust_remote_code_is_never_enabled():
    sources = [p for package in ("planner", "workers", "plugins") for p in (ROOT / package).rglob("*.py")]
    enabled = [str(p) for p in sources if re.search(r"trust_remote_code\s*=\s*(?!False)", p.read_text())]
    assert not enabled


def test_the_demo_model_not_built_says_how_to_build_it(filer, cpu_hardware, sent, settings, tmp_path):
    settings.DEMO_MODEL_DIR = tmp_path / "not-built"
    assert_refused(
        filer,
        valid_post(cpu_hardware, model_ref="demo", dataset_ref="demo", dataset_upload=None),
        "model_ref",
        r"The demo model is not built yet; run `make demo`",
    )


# --- numbers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("p95_target_ms", "nan", "Enter a number"),
        ("p95_target_ms", "inf", "Enter a number"),
        ("p95_target_ms", "-Infinity", "Enter a number"),
        ("p95_target_ms", "1e400", "no more than 10 digits"),
        ("p95_target_ms", "-5", "greater than or equal to 0.1"),
        ("p95_target_ms", "0", "greater than or equal to 0.1"),
        ("p95_target_ms", "99999999", "less than or equal to 600000"),
        ("accuracy_floor_pct", "0", "greater than or equal to 1"),
        ("accuracy_floor_pct", "100.5", "less than or equal to 100"),
        ("accuracy_floor_pct", "NaN", "Enter a number"),
        ("requests_per_day", "0", "greater than or equal to 1"),
        ("requests_per_day", "-1000", "greater than or equal to 1"),
        ("requests_per_day", "1e400", "Enter a whole number"),
        ("requests_per_day", "9" * 5000, "Enter a whole number"),
        ("requests_per_day", "1" + "0" * 13, "less than or equal to 1000000000000"),
        ("requests_per_day", "nan", "Enter a whole number"),
        ("peak_factor", "0.5", "greater than or equal to 1"),
        ("peak_factor", "inf", "Enter a number"),
        ("peak_factor", "1000", "less than or equal to 100"),
        ("target_utilisation", "0", "greater than or equal to 0.05"),
        ("target_utilisation", "1.5", "less than or equal to 1"),
        ("horizon_months", "0", "greater than or equal to 1"),
        ("horizon_months", "-12", "greater than or equal to 1"),
        ("horizon_months", "1200", "less than or equal to 120"),
        ("horizon_months", "1e3", "Enter a whole number"),
        ("engineering_hours", "-1", "greater than or equal to 0"),
        ("engineering_hours", "100001", "less than or equal to 100000"),
        ("engineering_hours", "1e9", "no more than 8 digits"),
        ("engineering_rate", "-0.01", "greater than or equal to 0"),
        ("engineering_rate", "1e400", "no more than 10 digits"),
        ("engineering_rate", "-inf", "Enter a number"),
        ("hardware", "99999999999999999999999", "Select a valid choice"),
        ("hardware", "-1", "Select a valid choice"),
        ("param:prune.ffn:amount", "nan", "Enter a number"),
        ("param:prune.ffn:amount", "1e400", "Enter a number"),
        ("param:prune.ffn:amount", "2", "less than or equal to 0.95"),
        ("param:distill.kd:batch_size", "1e400", "Enter a whole number"),
        ("param:distill.kd:batch_size", "0", "greater than or equal to 1"),
        ("param:quantize.weight-only:bits", "3", "Select a valid choice"),
    ],
)
def test_numbers_out_of_range_or_not_finite_are_refused_next_to_the_field(
    filer, cpu_hardware, tiny_model_dir, sent, field, value, message
):
    assert_refused(filer, valid_post(cpu_hardware, **{field: value}), field, message)


def test_text_fields_refuse_nul_characters_and_overlong_values(filer, cpu_hardware, tiny_model_dir, sent):
    assert_refused(filer, valid_post(cpu_hardware, title="a\x00b"), "title", "Null characters")
    assert_refused(filer, valid_post(cpu_hardware, title="x" * 201), "title", "at most 200")
    assert_refused(
        filer,
        valid_post(cpu_hardware, custom_pipelines="quantize.half\n" * 200),
        "custom_pipelines",
        "at most 2000",
    )


# --- CSRF ---------------------------------------------------------------------------------------------


def test_a_post_without_a_csrf_token_is_refused(filer_user, cpu_hardware, tiny_model_dir, sent):
    client = Client(enforce_csrf_checks=True)
    client.force_login(filer_user)
    response = client.post(reverse(CREATE), valid_post(cpu_hardware))
    assert response.status_code == 403
    assert not PocRequest.objects.exists() and not sent
    assert client.post(reverse("logout")).status_code == 403


def test_every_post_form_carries_a_csrf_token_and_no_view_is_exempt():
    templates = list((ROOT / "planner" / "templates").rglob("*.html"))
    for template in templates:
        for form in re.findall(r"<form[^>]*>.*?</form>", template.read_text(), flags=re.S | re.I):
            if re.search(r'method=["\']?post', form, flags=re.I):
                assert "{% csrf_token %}" in form, f"{template.name}: a POST form without {{% csrf_token %}}"
    sources = [p for package in ("planner", "workers", "plugins") for p in (ROOT / package).rglob("*.py")]
    assert not [p for p in sources if "csrf_exempt" in p.read_text()]
    assert "django.middleware.csrf.CsrfViewMiddleware" in settings.MIDDLEWARE


# --- production settings ------------------------------------------------------------------------------


def _check_deploy(tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    environ.update(
        DJANGO_SETTINGS_MODULE="planner.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="planner.example.com",
        VAR_DIR=str(tmp_path),
    )
    environ.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deployment_checklist(tmp_path):
    result = _check_deploy(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_deployment_checklist_catches_a_weak_secret(tmp_path):
    """The check above is not vacuous: a short secret key fails it."""
    result = _check_deploy(tmp_path, SECRET_KEY="short")
    assert result.returncode != 0 and "security.W009" in result.stdout + result.stderr


def test_production_settings_need_a_secret_key(tmp_path):
    result = _check_deploy(tmp_path, SECRET_KEY="")
    assert result.returncode != 0 and "Set SECRET_KEY" in result.stderr


def test_production_settings_trust_a_proxy_header_only_when_told(tmp_path):
    code = "from planner import settings as s; print(getattr(s, 'SECURE_PROXY_SSL_HEADER', None), s.SECURE_SSL_REDIRECT)"
    base = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    base.update(DEBUG="false", SECRET_KEY=secrets.token_urlsafe(60), VAR_DIR=str(tmp_path))
    plain = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True)
    proxied = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"},
        capture_output=True,
        text=True,
    )
    assert plain.stdout.split() == ["None", "True"], plain.stderr
    assert proxied.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https') True", proxied.stderr
