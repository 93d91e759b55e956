"""Hostile inputs a trial against a running instance got through, now refused with a clear message.

Parameters checked against the model (distill.kd layer lists and student size, prune.layers keep and
pattern), the pipeline step limit and order, model directories whose config.json and safetensors weights
disagree or describe an enormous model, a causal-LM CSV without a text column; and the missing protection:
login throttling (django-axes), password validators, a Content-Security-Policy. The request form: yes/no
parameters a script leaves out take their defaults, a typed pipeline with an empty step is refused with its
line and step, a reply length of 0 tokens, the model checks and the size limit at submit time, and a refusal
of the service shown on the form. Each refusal leaves nothing queued (``sent``), no request row and no
uploaded or extracted file behind.
"""

from __future__ import annotations

import html
import json
import re
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from planner import forms as planner_forms
from planner import services
from planner.models import Candidate, PocRequest
from planner.pipeline_fields import PipelineSyntaxError, parse_steps
from plugins import registry
from plugins.artifacts import ModelLoadError, check_model_dir
from plugins.base import ParamError
from plugins.model_info import ModelInfo, estimate_parameters, read_weights
from tests import test_safe_inputs
from tests.api.conftest import token_client
from tests.planner.test_generation import lm_post
from tests.planner.test_views import default_params
from tests.test_safe_inputs import field_errors, media_files, valid_post
from workers.datasets import DataError, parse_task_data

filer = test_safe_inputs.filer  # the fixtures: a client logged in as a user who may file requests
filer_user = test_safe_inputs.filer_user
model_copy = test_safe_inputs.model_copy

CREATE = "planner:request-create"
TASK = "sequence-classification"


def assert_refused(client, data, message: str, sent) -> str:
    """The POST re-renders the form with ``message`` (a regular expression over the unescaped page);
    nothing is queued, no row and no file is written. Returns the page."""
    files = media_files()
    response = client.post(reverse(CREATE), data)
    assert response.status_code == 200
    body = html.unescape(response.content.decode())
    assert 'class="error"' in body
    assert re.search(message, body), re.findall(r'class="error"[^<]*<[^>]*>([^<]*)', body)
    assert not PocRequest.objects.exists() and not Candidate.objects.exists()
    assert media_files() == files and sent == []
    return body


def file_request(hardware, *, model_ref: str = "tiny-bert", pipelines, task: str = TASK, **kwargs):
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.get(username="alice")
    extra = {"per_token_target_ms": Decimal(40)} if task == "causal-lm" else {}
    return services.poc_request_create(
        owner=owner,
        title="Hostile",
        model_ref=model_ref,
        dataset_ref="demo",
        p95_target_ms=Decimal(50),
        requests_per_day=1000,
        hardware=hardware,
        pipelines=pipelines,
        task=task,
        **extra,
        **kwargs,
    )


def assert_service_refuses(hardware, sent, error, message: str, **kwargs) -> None:
    files = media_files()
    with pytest.raises(error, match=message):
        file_request(hardware, **kwargs)
    assert not PocRequest.objects.exists() and media_files() == files and sent == []


# --- distill.kd and prune.layers against the model (tiny-bert has 2 layers) -------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"layers": "0,x"}, r"layers must be a comma-separated list of layer numbers such as 0,2,4"),
        ({"layers": "1.5"}, r"layers must be a comma-separated list of layer numbers"),
        ({"layers": "-1"}, r"layer numbers start at 0"),
        (
            {"layers": "5"},
            r"layers lists layer 5, which does not exist: the model has 2 layers, numbered 0 to 1",
        ),
        ({"layers": "1,1"}, r"lists a layer twice \(1\); list each layer once"),
        ({"layers": ",".join(map(str, range(100)))}, r"layers lists 100 layers; list at most 48"),
        ({"student_layers": "2"}, r"A student with 2 layers is not smaller than the model, which has 2"),
        ({"layers": "0,1"}, r"A student with 2 layers is not smaller than the model"),
    ],
)
def test_distillation_layers_are_checked_against_the_model(
    filer, cpu_hardware, tiny_model_dir, sent, params, message
):
    fields = {f"param:distill.kd:{name}": value for name, value in params.items()}
    if "student_layers" not in params:
        fields["param:distill.kd:student_layers"] = "1"
    assert_refused(filer, valid_post(cpu_hardware, candidates=["distill.kd"], **fields), message, sent)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"keep": "48"}, r"keep=48 would keep every layer: the model has 2; choose fewer than 2"),
        ({"keep": "2"}, r"keep=2 would keep every layer"),
        (
            {"strategy": "pattern", "pattern": "0,7"},
            r"pattern lists layer 7, which does not exist: the model has 2 layers, numbered 0 to 1",
        ),
        ({"strategy": "pattern", "pattern": "0,1"}, r"pattern keeps all 2 layers"),
        ({"strategy": "pattern", "pattern": "0,0"}, r"lists a layer twice"),
    ],
)
def test_layer_dropping_is_checked_against_the_model(
    filer, cpu_hardware, tiny_model_dir, sent, params, message
):
    fields = {f"param:prune.layers:{name}": value for name, value in params.items()}
    data = valid_post(cpu_hardware, candidates=["prune.layers → quantize.dynamic-int8"], **fields)
    assert_refused(filer, data, message, sent)


def test_scripts_calling_the_service_get_the_model_checks_too(cpu_hardware, user, tiny_model_dir, sent):
    step = {"technique": "prune.layers", "params": {"keep": 48}}
    assert_service_refuses(
        cpu_hardware, sent, ParamError, r"step 1: prune.layers: keep=48", pipelines=[[step]]
    )
    kd = {"technique": "distill.kd", "params": {"layers": "9"}}
    assert_service_refuses(cpu_hardware, sent, ParamError, r"layer 9, which does not exist", pipelines=[[kd]])


def test_a_valid_student_and_layer_choice_is_queued(
    cpu_hardware, user, tiny_model_dir, sent, django_capture_on_commit_callbacks
):
    pipelines = [
        [{"technique": "distill.kd", "params": {"layers": "1"}}],
        [{"technique": "prune.layers", "params": {"keep": 1, "strategy": "top"}}],
    ]
    with django_capture_on_commit_callbacks(execute=True):
        poc_request = file_request(cpu_hardware, pipelines=pipelines)
    assert poc_request.candidates.count() == 3 and len(sent) == 1


def test_each_step_is_checked_against_the_model_the_earlier_steps_leave():
    info = ModelInfo(task=TASK, model_type="bert", layers=6, hidden_size=32, vocab_size=50)
    kd = {"technique": "distill.kd", "params": {"student_layers": 3}}
    with pytest.raises(
        ParamError, match=r"step 2: prune.layers: keep=3 would keep every layer: the model has 3"
    ):
        registry.validate_pipeline(
            [kd, {"technique": "prune.layers", "params": {"keep": 3}}],
            device="cpu",
            task=TASK,
            model_info=info,
        )
    ok = [kd, {"technique": "prune.layers", "params": {"keep": 2, "strategy": "top"}}]
    assert len(registry.validate_pipeline(ok, device="cpu", task=TASK, model_info=info)) == 2


def test_head_pruning_is_refused_on_a_model_with_one_head_per_layer():
    info = ModelInfo(task=TASK, model_type="bert", layers=2, hidden_size=32, vocab_size=50, attention_heads=1)
    with pytest.raises(ParamError, match=r"prune.heads: the model has one attention head per layer"):
        registry.validate_pipeline([{"technique": "prune.heads"}], device="cpu", task=TASK, model_info=info)


# --- pipeline length, order and repeats --------------------------------------------------------------------


def test_a_pipeline_of_180_steps_is_refused(filer, cpu_hardware, tiny_model_dir, sent):
    line = ">".join(["prune.ffn"] * 180)  # within the field's 2,000 characters
    data = valid_post(cpu_hardware, candidates=[], custom_pipelines=line)
    assert_refused(filer, data, r"a pipeline has at most 8 steps; this one has 180", sent)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            ["quantize.half", "prune.ffn"],
            r"step 1: quantize.half quantizes the model, so it must be the last step",
        ),
        (["quantize.dynamic-int8", "quantize.half"], r"quantizes the model, so it must be the last step"),
        (["distill.kd", "prune.ffn", "distill.kd"], r"step 3: distill.kd is already step 1"),
        (
            ["prune.ffn", "prune.ffn"],
            r"step 2: prune.ffn twice in a row does what one step with a larger amount",
        ),
    ],
)
def test_pipeline_order_and_repeats(names, message):
    with pytest.raises(ParamError, match=message):
        registry.validate_pipeline([{"technique": n} for n in names], device="cpu", task=TASK)


def test_a_pruning_technique_may_come_back_after_another_step():
    names = ["prune.ffn", "distill.kd", "prune.ffn", "quantize.dynamic-int8"]
    steps = registry.validate_pipeline([{"technique": n} for n in names], device="cpu", task=TASK)
    assert [s["technique"] for s in steps] == names
    assert registry.MAX_PIPELINE_STEPS == 8


# --- hostile model directories ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        (
            "huge-vocab",
            {"vocab_size": 3_000_000_000},
            r"vocab_size \(the vocabulary size\) must be a whole number from 1 to 2,097,152; found 3000000000",
        ),
        (
            "huge-hidden",
            {"hidden_size": 1_000_000},
            r"hidden_size \(the hidden size\) must be a whole number from 1 to 65,536",
        ),
        (
            "negative",
            {"num_hidden_layers": -2},
            r"num_hidden_layers \(the layer count\) must be a whole number .*found -2",
        ),
        ("float-dims", {"intermediate_size": 64.5}, r"intermediate_size .*found 64.5"),
        ("bool-dims", {"num_attention_heads": True}, r"num_attention_heads .*found true"),
        ("string-dims", {"vocab_size": "47"}, r"vocab_size .*found the string '47'"),
        ("no-layers", {"num_hidden_layers": None}, r"does not give the model's layer count"),
        (
            "string-arch",
            {"architectures": "BertForSequenceClassification"},
            r"architectures must be a list of up to 16 class names, .*found the string 'BertForSequenceClassification'",
        ),
        ("list-of-numbers-arch", {"architectures": [1, 2]}, r"architectures must be a list .*found \[1, 2\]"),
        (
            "big-config-tiny-weights",
            {"vocab_size": 2_000_000},
            r"config.json describes a model of 64.0 million to .* parameters, but model.safetensors holds "
            r"21.9 thousand; the config and the weights do not belong together",
        ),
        (
            "more-layers",
            {"num_hidden_layers": 3},
            r"config.json says the model has 3 layers, but model.safetensors holds the weights of 2 \(numbered 0 to 1\)",
        ),
    ],
)
def test_a_hostile_config_is_refused_next_to_the_model_field(
    filer, cpu_hardware, model_copy, sent, name, config, message
):
    model_copy(name, config=config)
    assert_refused(filer, valid_post(cpu_hardware, model_ref=name), message, sent)


def test_a_hostile_config_is_refused_by_the_service_too(cpu_hardware, user, model_copy, sent):
    model_copy("big-vocab", config={"vocab_size": 2_000_000})
    assert_service_refuses(
        cpu_hardware,
        sent,
        ValidationError,
        r"big-vocab: config.json describes a model of 64.0 million",
        model_ref="big-vocab",
        pipelines=[[{"technique": "quantize.dynamic-int8"}]],
    )
    assert_service_refuses(
        cpu_hardware,
        sent,
        ValidationError,
        r"inside the models folder",
        model_ref="../../etc",
        pipelines=[],
    )


def test_a_model_over_the_size_limit_is_refused_with_the_figures(
    cpu_hardware, user, tiny_model_dir, sent, settings
):
    settings.MODEL_MAX_BYTES = 50_000
    assert_service_refuses(
        cpu_hardware,
        sent,
        ValidationError,
        r"tiny-bert/config.json describes a model of at least 20.0 thousand parameters \(80.0 kB\), over this "
        r"deployment's limit of 50.0 kB \(MODEL_MAX_BYTES\)",
        pipelines=[],
    )


def test_weights_over_the_size_limit_are_refused_with_the_file_and_the_figure(model_copy):
    path = model_copy("half-config", config={"torch_dtype": "float16"})  # the config then says 40 kB
    check_model_dir(path, max_bytes=100_000)
    with pytest.raises(
        ModelLoadError,
        match=r"half-config/model.safetensors holds 87.7 kB of weights, over .* 60.0 kB \(MODEL_MAX_BYTES\)",
    ):
        check_model_dir(path, max_bytes=60_000)


def _write_header(path: Path, header: dict, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            "truncate",
            r"model.safetensors is not a complete safetensors file: its header describes 87,\d+ bytes of tensors but the file holds",
        ),
        ("huge-length", r"its header claims 1,099,511,627,776 bytes but the file has"),
        ("short", r"it is only 3 bytes long"),
        ("not-json", r"its header is not JSON"),
        ("bad-dtype", r"the header's entry for 'w' is malformed"),
        ("wrong-offsets", r"w is a F32 tensor of shape \[2, 2\], 16 bytes, but the header gives it 8"),
    ],
)
def test_a_damaged_safetensors_header_is_refused_without_torch(model_copy, damage, message):
    path = model_copy(f"damaged-{damage}")
    weights = path / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "huge-length":
        weights.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    elif damage == "short":
        weights.write_bytes(b"abc")
    elif damage == "not-json":
        weights.write_bytes(struct.pack("<Q", 4) + b"{no}")
    elif damage == "bad-dtype":
        _write_header(weights, {"w": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
    else:
        _write_header(weights, {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(ModelLoadError, match=message):
        check_model_dir(path, task=TASK)


def _shard(path: Path) -> None:
    """Split the model's weights into two shards with an index, as save_pretrained does for large models."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    (path / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(path / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_sharded_weights_are_read_through_their_index(model_copy):
    path = model_copy("sharded")
    _shard(path)
    weights = read_weights(path)
    assert weights.files == ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    assert weights.parameters == 21923 and weights.layer_indices == frozenset({0, 1})
    check_model_dir(path, task=TASK, max_bytes=10**6)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../outside.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        ModelLoadError,
        match=r"names the shard '../outside.safetensors', which is not a .safetensors file of this directory",
    ):
        check_model_dir(path)
    index["weight_map"][first] = "model-00003-of-00002.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        ModelLoadError, match=r"names the shard model-00003-of-00002.safetensors, which is missing"
    ):
        check_model_dir(path)


def test_the_size_estimate_brackets_the_real_models(tiny_model_dir, tiny_llama_dir):
    for path in (tiny_model_dir, tiny_llama_dir):
        config = json.loads((path / "config.json").read_text())
        low, high = estimate_parameters(config)
        assert low <= read_weights(path).parameters <= high, path.name
    info = ModelInfo.from_config(json.loads((tiny_llama_dir / "config.json").read_text()), task="causal-lm")
    assert (info.layers, info.hidden_size, info.attention_heads) == (4, 32, 4)


# --- task data ----------------------------------------------------------------------------------------


def test_a_causal_lm_csv_without_a_text_column_asks_only_for_the_text_column(
    filer, cpu_hardware, tiny_llama_dir, sent
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    raw = b"review,stars\nthe rain came,4\nsnow all day,2\n"
    with pytest.raises(DataError) as caught:
        parse_task_data(raw, "replies.csv", require_labels=False, task="causal-lm")
    assert "label" not in str(caught.value)
    data = lm_post(cpu_hardware, dataset_ref="upload", dataset_upload=SimpleUploadedFile("replies.csv", raw))
    body = assert_refused(
        filer,
        data,
        r"Line 1: the data needs a 'text' column \(one text per row\); missing: text; found: review, stars",
        sent,
    )
    errors = re.findall(r'<p class="error">([^<]*)</p>', body)
    assert errors and not any("label" in error for error in errors), errors


# --- logins: throttling, password rules -----------------------------------------------------------------


def _login(client, password: str, *, username: str = "alice", address: str = "127.0.0.1"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def test_repeated_bad_logins_lock_the_account_with_a_clear_page_until_an_admin_unlocks_it(
    user, django_user_model
):
    from axes.models import AccessAttempt

    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "wrong").status_code == 200
    locked = _login(client, "wrong")
    assert locked.status_code == 429
    page = html.unescape(locked.content.decode())
    assert "Too many failed logins for alice from this address: logging in is locked for 15 minutes." in page
    assert "ask an administrator to unlock your account now" in page
    # Now even the right password is refused, and nobody is logged in.
    right = _login(client, "pw")
    assert right.status_code == 429 and "_auth_user_id" not in client.session
    # The lock is for this username from this address: another address may still log in.
    assert _login(Client(), "pw", address="10.0.0.9").status_code == 302

    admin = django_user_model.objects.create_superuser("root", password="a-long-admin-password")
    staff = Client()
    staff.force_login(admin)
    attempt = AccessAttempt.objects.get(username="alice", ip_address="127.0.0.1")
    response = staff.post(reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"})
    assert response.status_code == 302 and not AccessAttempt.objects.filter(username="alice").exists()
    assert _login(client, "pw").status_code == 302


def test_a_successful_login_resets_the_count(user):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "wrong")
    assert _login(client, "pw").status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, "wrong").status_code == 200


def test_the_admin_login_is_throttled_too(user):
    client = Client()
    url = reverse("admin:login")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(url, {"username": "alice", "password": "wrong"})
    assert response.status_code == 429 and "Login locked" in response.content.decode()


def test_passwords_follow_djangos_four_standard_rules(user):
    from django.contrib.auth.password_validation import validate_password

    names = [v["NAME"].rsplit(".", 1)[1] for v in settings.AUTH_PASSWORD_VALIDATORS]
    assert names == [
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    ]
    for weak, message in (("pw", "too short"), ("password", "too common"), ("83719265", "entirely numeric")):
        with pytest.raises(ValidationError, match=message):
            validate_password(weak, user)
    with pytest.raises(ValidationError, match="too similar to the username"):
        validate_password("alice123", user)
    validate_password("correct horse battery staple", user)


# --- Content-Security-Policy ----------------------------------------------------------------------------


def test_every_page_carries_a_content_security_policy_without_inline_allowances(client_logged_in):
    for response in (Client().get(reverse("login")), client_logged_in.get(reverse("planner:request-create"))):
        policy = dict(
            part.strip().split(" ", 1)
            for part in response["Content-Security-Policy"].split(";")
            if part.strip()
        )
        assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
        assert policy["style-src"] == "'self'" and policy["img-src"] == "'self' data:"
        assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
        assert "unsafe" not in response["Content-Security-Policy"]


def test_the_templates_have_no_inline_script_style_or_handler_the_policy_would_block():
    root = Path(settings.BASE_DIR) / "planner" / "templates"
    for template in root.rglob("*.html"):
        source = template.read_text()
        for tag in re.findall(r"<script\b[^>]*>", source):
            assert "src=" in tag, (template, tag)
        assert not re.search(r"\sstyle=|\son[a-z]+=|javascript:", source), template


# --- the request form: what a script leaves out, typed pipelines, limits at submit time ------------------------

INT8 = "quantize.dynamic-int8"
DROP_INT8 = "prune.layers → quantize.dynamic-int8"


def left_files() -> list[Path]:
    """Every file under the uploads folder and the extracted model archives' folder."""
    archives = Path(settings.MODEL_ARCHIVES_ROOT)
    extracted = sorted(p for p in archives.rglob("*") if p.is_file()) if archives.is_dir() else []
    return media_files() + extracted


def assert_refused_on(client, data, field: str, message: str, sent) -> None:
    """The POST re-renders the form with ``message`` (a regular expression) next to ``field``; nothing is
    queued, no row is written and no file is left behind."""
    files = left_files()
    response = client.post(reverse(CREATE), data)
    assert response.status_code == 200
    section = html.unescape(field_errors(response, field))
    assert 'class="error"' in section, section[:2000]
    assert re.search(message, section), section[:2000]
    assert not PocRequest.objects.exists() and not Candidate.objects.exists()
    assert left_files() == files and sent == []


def _without_checkboxes(hardware, **overrides) -> dict:
    """A submission as a script sends it: no yes/no parameter fields, no markers, no step fields."""
    data = valid_post(hardware, **overrides)
    for name in default_params():
        data.pop(name, None)
    return data


def _filed_pipelines() -> dict[str, list[dict]]:
    return {
        registry.pipeline_label(c.pipeline): c.pipeline for c in PocRequest.objects.get().candidates.all()
    }


def test_yes_no_parameters_a_script_leaves_out_take_their_defaults(filer, cpu_hardware, tiny_model_dir, sent):
    data = _without_checkboxes(
        cpu_hardware, candidates=[INT8, DROP_INT8, "runtime.onnxruntime"], **{"param:prune.layers:keep": "1"}
    )
    assert not any(":per_channel" in name or ":embeddings" in name for name in data)
    response = filer.post(reverse(CREATE), data)
    assert response.status_code == 302, html.unescape(response.content.decode())[-3000:]
    pipelines = _filed_pipelines()
    assert pipelines[INT8][0]["params"] == {"per_channel": True, "embeddings": True}
    assert pipelines[DROP_INT8][1]["params"] == {"per_channel": True, "embeddings": True}  # no step fields
    assert pipelines["runtime.onnxruntime"][0]["params"]["per_channel"] is True


def test_an_unticked_box_of_a_rendered_form_is_no(filer, cpu_hardware, tiny_model_dir, sent):
    page = filer.get(reverse(CREATE)).content.decode()
    marker = f"param:{INT8}:per_channel:shown"
    assert f'<input type="hidden" name="{marker}" value="1">' in page
    # per_channel rendered and unticked (its marker only); embeddings rendered and ticked.
    data = _without_checkboxes(cpu_hardware, **{marker: "1", f"param:{INT8}:embeddings": "on"})
    assert filer.post(reverse(CREATE), data).status_code == 302
    assert _filed_pipelines()[INT8][0]["params"] == {"per_channel": False, "embeddings": True}


def test_a_step_left_out_takes_the_techniques_value_and_a_step_of_its_own_wins(
    filer, cpu_hardware, tiny_model_dir, sent
):
    n = planner_forms.PocRequestForm(teams=None).candidate_labels.index(DROP_INT8)
    step = planner_forms.PocRequestForm.step_field_name
    data = _without_checkboxes(
        cpu_hardware,
        candidates=[INT8, DROP_INT8],
        **{
            "param:prune.layers:keep": "1",
            f"param:{INT8}:embeddings:shown": "1",  # the technique's box shown and unticked: no
            step(n, 1, "per_channel"): "false",  # this step's own value
            step(n, 1, "embeddings"): "",  # as above
        },
    )
    assert filer.post(reverse(CREATE), data).status_code == 302
    pipelines = _filed_pipelines()
    assert pipelines[INT8][0]["params"] == {"per_channel": True, "embeddings": False}
    assert pipelines[DROP_INT8][1]["params"] == {"per_channel": False, "embeddings": False}


def test_an_api_filing_without_yes_no_parameters_takes_their_defaults(
    client, user, cpu_hardware, tiny_model_dir, sent
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.tiny import tiny_csv

    api = token_client(client, user)
    response = api.post(
        reverse("api:request-list"),
        {
            "title": "Script",
            "model_ref": "tiny-bert",
            "dataset_ref": "upload",
            "dataset_upload": SimpleUploadedFile("tickets.csv", tiny_csv(), content_type="text/csv"),
            "p95_target_ms": "50",
            "hardware": str(cpu_hardware.pk),
            "pipelines": json.dumps([[{"technique": INT8, "params": {"embeddings": False}}]]),
        },
    )
    assert response.status_code == 201, response.content[:2000]
    assert _filed_pipelines()[INT8][0]["params"] == {"per_channel": True, "embeddings": False}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            "quantize.half\nprune.ffn →→ quantize.half",
            r"line 2, step 2: empty step between two arrows; remove one arrow .*\(prune.ffn →→ quantize.half\)",
        ),
        ("prune.ffn → → quantize.half", r"line 1, step 2: empty step between two arrows"),
        ("prune.ffn -> > quantize.half", r"line 1, step 2: empty step between two arrows"),
        ("prune.ffn → quantize.half →", r"line 1, step 3: empty step after the last arrow"),
        ("→ prune.ffn", r"line 1, step 1: empty step before the first arrow"),
        ("→", r"line 1, step 1: empty step before the first arrow"),
        ("prune.ffn → (amount=0.3)", r"line 1, step 2: parameters without a technique"),
        ("\n\nprune.ffn(amount=0.3", r"line 3, step 1: parentheses do not match"),
        ("prune.ffn → quantize.half(per_channel)", r"line 1, step 2: quantize.half: write each parameter as"),
    ],
)
def test_a_malformed_typed_pipeline_is_refused_with_its_line_and_step(
    filer, cpu_hardware, tiny_model_dir, sent, lines, message
):
    assert_refused_on(
        filer, valid_post(cpu_hardware, custom_pipelines=lines), "custom_pipelines", message, sent
    )


def test_typed_pipelines_blank_lines_and_spacing_are_fine():
    assert parse_steps("   ") == []
    assert parse_steps(" prune.ffn  ->quantize.half ") == [("prune.ffn", {}), ("quantize.half", {})]
    with pytest.raises(PipelineSyntaxError) as caught:
        parse_steps("prune.ffn → prune.layers →→ quantize.half")
    assert caught.value.step == 3 and caught.value.at_line(4).startswith("line 4, step 3: empty step between")


@pytest.mark.parametrize("value", ["-1", "0"])
def test_a_reply_of_no_tokens_is_refused_with_the_real_minimum(
    filer, cpu_hardware, tiny_llama_dir, sent, value
):
    data = lm_post(cpu_hardware, output_tokens_per_request=value)
    assert_refused_on(
        filer, data, "output_tokens_per_request", r"Ensure this value is greater than or equal to 1\.", sent
    )
    page = filer.get(reverse(CREATE) + "?task=causal-lm").content.decode()
    assert re.search(r'name="output_tokens_per_request"[^>]* min="1"', page)


@pytest.fixture
def no_filing(monkeypatch):
    """The service must not be reached: the form refuses first."""

    def refuse(**kwargs):
        raise AssertionError("the form let the request through to the service")

    monkeypatch.setattr(services, "poc_request_create", refuse)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (
            {"candidates": [], "custom_pipelines": "quantize.half\nprune.layers(keep=5) → quantize.half"},
            "custom_pipelines",
            r"line 2: prune.layers → quantize.half: step 1: prune.layers: keep=5 would keep every layer: the "
            r"model has 2",
        ),
        (
            {"candidates": [], "custom_pipelines": "distill.kd(student_layers=1) → prune.layers(keep=1)"},
            "custom_pipelines",
            r"step 2: prune.layers: keep=1 would keep every layer: the model has 1",
        ),
        (
            {"candidates": ["distill.kd"], "param:distill.kd:layers": "7"},
            "candidates",
            r"distill.kd: step 1: distill.kd: layers lists layer 7, which does not exist",
        ),
        (
            {
                "candidates": [DROP_INT8],
                "param:prune.layers:strategy": "pattern",
                "param:prune.layers:pattern": "0,2",
            },
            "candidates",
            r"pattern lists layer 2, which does not exist: the model has 2 layers",
        ),
    ],
)
def test_the_model_checks_run_when_the_form_is_submitted(
    filer, cpu_hardware, tiny_model_dir, sent, no_filing, data, field, message
):
    assert_refused_on(filer, valid_post(cpu_hardware, **data), field, message, sent)


def test_a_causal_lm_is_checked_against_its_own_layer_count(
    filer, cpu_hardware, tiny_llama_dir, sent, no_filing
):
    data = lm_post(cpu_hardware, candidates=[], custom_pipelines="prune.layers(keep=4)")
    assert_refused_on(
        filer, data, "custom_pipelines", r"keep=4 would keep every layer: the model has 4", sent
    )


def test_a_model_over_the_size_limit_is_refused_on_the_form(
    filer, cpu_hardware, model_copy, sent, settings, no_filing
):
    model_copy("half-weights", config={"torch_dtype": "float16"})  # the config says 40 kB, the weights 87.7
    settings.MODEL_MAX_BYTES = 60_000
    assert_refused_on(
        filer,
        valid_post(cpu_hardware, model_ref="half-weights"),
        "model_ref",
        r"half-weights/model.safetensors holds 87.7 kB of weights, over .*60.0 kB \(MODEL_MAX_BYTES\)",
        sent,
    )


def test_a_refusal_of_the_service_is_shown_on_the_form(
    filer, cpu_hardware, model_copy, sent, settings, monkeypatch
):
    """The service checks the model again when it files the request (its files may change after the form
    read them). Here the form's check leaves the limit out, so the service is the one to refuse: the page
    shows why next to the model, not a server error."""
    model_copy("half-weights", config={"torch_dtype": "float16"})
    settings.MODEL_MAX_BYTES = 60_000
    checked = planner_forms.check_model_dir
    monkeypatch.setattr(
        planner_forms,
        "check_model_dir",
        lambda path, *, task=None, max_bytes=None: checked(path, task=task),
    )
    assert_refused_on(
        filer,
        valid_post(cpu_hardware, model_ref="half-weights"),
        "model_ref",
        r"holds 87.7 kB of weights, over .*60.0 kB \(MODEL_MAX_BYTES\)",
        sent,
    )


def test_a_refusal_of_the_service_naming_no_form_field_is_shown_above_the_form(
    filer, cpu_hardware, tiny_model_dir, sent, monkeypatch
):
    def refuse(**kwargs):
        raise ValidationError({"dataset_file": "The stored file name is too long."})

    monkeypatch.setattr(services, "poc_request_create", refuse)
    files = left_files()
    response = filer.post(reverse(CREATE), valid_post(cpu_hardware))
    assert response.status_code == 200
    errors = html.unescape(response.content.decode()).split('<div class="errors">', 1)[1][:500]
    assert "The stored file name is too long." in errors
    assert left_files() == files and sent == []


def test_the_plugin_guide_documents_the_model_hooks_and_the_pipeline_rules():
    guide = (Path(settings.BASE_DIR) / "docs" / "plugins.md").read_text()
    for hook in ("check_for_model(params, model_info)", "model_after(params, model_info)"):
        assert f"**`{hook}`**" in guide, hook
    assert f"at most **{registry.MAX_PIPELINE_STEPS} steps**" in guide
    assert "must be the last step of a pipeline (validation refuses anything" not in guide
