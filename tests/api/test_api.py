"""The API through real HTTP requests with token authentication: filing through the request form's rules,
the one error format, team and role rules on every endpoint, downloads, and the schema."""

from __future__ import annotations

import io
import json
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from planner.models import PocRequest
from tests.api.conftest import token_client
from tests.planner.factories import measured_request, sweep
from tests.tiny import tiny_csv

INT8 = [{"technique": "quantize.dynamic-int8"}]


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:2000]
    body = response.json()["error"]
    assert body["status"] == status and body["message"] and isinstance(body["fields"], dict)
    return body


def _file(api, hw, **overrides):
    data = {
        "title": "Tickets via API",
        "model_ref": "tiny-bert",
        "dataset_ref": "upload",
        "dataset_upload": SimpleUploadedFile("tickets.csv", tiny_csv(), content_type="text/csv"),
        "p95_target_ms": "50",
        "accuracy_floor_pct": "90",
        "hardware": str(hw.pk),
        "candidates": ["quantize.dynamic-int8"],
    }
    data.update(overrides)
    return api.post(reverse("api:request-list"), {k: v for k, v in data.items() if v is not None})


def _measured(owner, hardware, **kwargs):
    return measured_request(
        owner=owner, hardware=hardware, models=[(0.9, sweep(20)), (0.89, sweep(10))], **kwargs
    )


def test_anonymous_and_bad_tokens_get_401_in_the_error_format(client, db):
    for name in ("request-list", "technique-list", "portfolio"):
        assert _error(client.get(reverse(f"api:{name}")), 401)["code"] == "not_authenticated"
    client.defaults["HTTP_AUTHORIZATION"] = "Token not-a-token"
    assert _error(client.get(reverse("api:hardware-list")), 401)["code"] == "authentication_failed"
    _error(client.get(reverse("api:schema")), 401)


def test_file_a_request_with_an_upload_and_follow_it(api, cpu_hardware, tiny_model_dir, sent):
    response = _file(
        api,
        cpu_hardware,
        pipelines=json.dumps([[{"technique": "prune.magnitude", "params": {"amount": 0.3}}]]),
    )
    assert response.status_code == 201, response.content[:2000]
    body = response.json()
    assert body["status"] == "queued" and body["model_source"] == "local" and body["currency"] == "USD"
    labels = [c["label"] for c in body["candidates"]]
    assert labels == ["baseline", "quantize.dynamic-int8", "prune.magnitude"]
    poc_request = PocRequest.objects.get(pk=body["id"])
    assert poc_request.candidates.get(position=2).pipeline[0]["params"]["amount"] == 0.3
    assert response["Location"].endswith(reverse("api:request-detail", args=[poc_request.pk]))
    detail = api.get(reverse("api:request-detail", args=[poc_request.pk])).json()
    assert detail["progress"] == 0.0 and len(detail["candidates"]) == 3
    listed = api.get(reverse("api:request-list"), {"status": "queued"}).json()
    assert [r["id"] for r in listed["results"]] == [poc_request.pk]
    assert api.get(reverse("api:request-list"), {"status": "failed"}).json()["count"] == 0


def test_json_filing_with_the_demo_data_and_shared_params(api, cpu_hardware, tiny_model_dir, sent):
    response = api.post(
        reverse("api:request-list"),
        {
            "title": "JSON",
            "model_ref": "tiny-bert",
            "dataset_ref": "upload",
            "hardware": cpu_hardware.pk,
            "candidates": ["quantize.dynamic-int8"],
        },
        content_type="application/json",
    )
    body = _error(response, 400)  # the form's own rule: upload chosen, no file
    assert "dataset_upload" in body["fields"]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"p95_target_ms": "-1"}, "p95_target_ms"),
        ({"model_ref": "../etc"}, "model_ref"),
        ({"hardware": "999999"}, "hardware"),
        ({"currency": "EUR"}, "currency"),
        ({"candidates": ["nope.technique"]}, "candidates"),
        (
            {"pipelines": json.dumps([[{"technique": "prune.magnitude", "params": {"amount": 7}}]])},
            "pipelines",
        ),
        ({"pipelines": "not json"}, "pipelines"),
        ({"params": json.dumps({"prune.magnitude": {"amount": "x"}})}, "params.prune.magnitude.amount"),
        ({"dataset_upload": SimpleUploadedFile("t.csv", b"review,stars\nok,5\n")}, "dataset_upload"),
        ({"model_source": "hub", "hub_model": "bad id!", "model_revision": "main"}, "hub_model"),
        ({"model_source": "hub", "hub_model": "org/name", "model_revision": "main"}, "model_revision"),
        ({"model_source": "archive"}, "model_archive"),
        ({"title": None}, "title"),
    ],
)
def test_every_input_the_form_refuses_is_a_400_naming_the_field(
    api, cpu_hardware, tiny_model_dir, sent, overrides, field
):
    body = _error(_file(api, cpu_hardware, **overrides), 400)
    assert field in body["fields"], body
    assert body["code"] == "invalid" and not PocRequest.objects.exists() and not sent


def _zip(folder: Path, *, prefix: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, prefix + path.name)
        for name, body in (extra or {}).items():
            archive.writestr(name, body)
    return out.getvalue()


def test_model_archive_is_extracted_per_request_and_checked(api, cpu_hardware, tiny_model_dir, sent):
    upload = SimpleUploadedFile("tiny-bert.zip", _zip(tiny_model_dir, prefix="tiny-bert/"))
    response = _file(api, cpu_hardware, model_source="archive", model_ref=None, model_archive=upload)
    assert response.status_code == 201, response.content[:2000]
    poc_request = PocRequest.objects.get()
    assert (poc_request.model_source, poc_request.model_ref) == ("archive", "tiny-bert.zip")
    folder = settings.MODEL_ARCHIVES_ROOT / f"request-{poc_request.pk}"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not list(settings.MODEL_ARCHIVES_ROOT.glob("staging-*"))


def _tar_with(member) -> bytes:
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        archive.addfile(member, io.BytesIO(b"x") if member.isfile() else None)
    return out.getvalue()


def _unsafe_archives(tiny_model_dir: Path) -> dict[str, bytes]:
    import tarfile

    link = tarfile.TarInfo("config.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    absolute = tarfile.TarInfo("/tmp/evil")
    absolute.size = 1
    pickles = {"pytorch_model.bin": b"x", "config.json": (tiny_model_dir / "config.json").read_bytes()}
    auto_map = json.loads((tiny_model_dir / "config.json").read_text()) | {"auto_map": {"AutoModel": "x.Y"}}
    no_code = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir()} | {
        "config.json": json.dumps(auto_map).encode()
    }

    def zipped(files):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for name, body in files.items():
                archive.writestr(name, body)
        return out.getvalue()

    return {
        "dotdot": _zip(tiny_model_dir, extra={"../escape.txt": b"x"}),
        "absolute": _tar_with(absolute),
        "symlink": _tar_with(link),
        "pickle": zipped(pickles),
        "auto_map": zipped(no_code),
        "garbage": b"not an archive at all",
        "too_many": zipped({f"f{i}.txt": b"x" for i in range(30)}),
    }


def test_unsafe_or_unusable_archives_are_refused_and_leave_nothing(
    api, cpu_hardware, tiny_model_dir, sent, settings
):
    settings.MODEL_ARCHIVE_MAX_MEMBERS = 20
    for name, body in _unsafe_archives(tiny_model_dir).items():
        upload = SimpleUploadedFile(f"{name}.zip", body)
        response = _file(api, cpu_hardware, model_source="archive", model_ref=None, model_archive=upload)
        assert "model_archive" in _error(response, 400)["fields"], name
    assert not PocRequest.objects.exists()
    assert not list(settings.MODEL_ARCHIVES_ROOT.glob("staging-*"))
    assert not Path("/tmp/evil").exists()
    settings.MODEL_ARCHIVE_MAX_BYTES = 1000
    upload = SimpleUploadedFile("big.zip", _zip(tiny_model_dir))
    body = _error(_file(api, cpu_hardware, model_source="archive", model_archive=upload), 400)
    assert "limit" in body["fields"]["model_archive"][0]


def test_hub_request_is_filed_with_its_commit(api, cpu_hardware, sent):
    response = _file(
        api,
        cpu_hardware,
        model_source="hub",
        model_ref=None,
        hub_model="org/tiny-bert",
        model_revision="a" * 40,
    )
    assert response.status_code == 201, response.content[:2000]
    body = response.json()
    assert (body["model_source"], body["model_ref"], body["model_revision"]) == (
        "hub",
        "org/tiny-bert",
        "a" * 40,
    )


def test_another_teams_requests_are_404_on_every_endpoint(api, user, other_team_user, cpu_hardware, tmp_path):
    theirs = _measured(other_team_user, cpu_hardware)
    candidate = theirs.candidates.get(position=1)
    for name, args in [
        ("request-detail", [theirs.pk]),
        ("candidate-list", [theirs.pk]),
        ("candidate-detail", [theirs.pk, candidate.pk]),
        ("candidate-download", [theirs.pk, candidate.pk]),
    ]:
        _error(api.get(reverse(f"api:{name}", args=args)), 404)
    for name in ("request-cancel", "request-decision"):
        _error(api.post(reverse(f"api:{name}", args=[theirs.pk]), {"decision": "approved"}), 404)
    assert theirs.pk not in [r["id"] for r in api.get(reverse("api:request-list")).json()["results"]]
    assert api.get(reverse("api:portfolio")).json()["count"] == 0
    theirs.refresh_from_db()
    assert theirs.decision == "" and theirs.status == "succeeded"


def test_only_managers_decide_and_see_the_portfolio(client, user, requester_only, cpu_hardware):
    poc_request = _measured(user, cpu_hardware)
    rita = token_client(client, requester_only)
    assert (
        "manager"
        in _error(
            rita.post(reverse("api:request-decision", args=[poc_request.pk]), {"decision": "approved"}), 403
        )["message"]
    )
    _error(rita.get(reverse("api:portfolio")), 403)
    assert rita.get(reverse("api:request-detail", args=[poc_request.pk])).status_code == 200
    alice = token_client(client, user)
    body = _error(
        alice.post(reverse("api:request-decision", args=[poc_request.pk]), {"decision": "rejected"}), 400
    )
    assert "comment" in body["fields"]
    decided = alice.post(
        reverse("api:request-decision", args=[poc_request.pk]),
        {"decision": "rejected", "comment": "too slow"},
        content_type="application/json",
    )
    assert decided.status_code == 200 and decided.json()["decision"] == "rejected"
    portfolio = alice.get(reverse("api:portfolio")).json()
    assert portfolio["count"] == 1 and portfolio["totals"][0]["currency"] == "USD"
    assert sum(portfolio["counts"].values()) == 1


def test_filing_needs_the_requester_role(client, db, django_user_model, cpu_hardware, tiny_model_dir, sent):
    from tests.planner.factories import join_team

    viewer = join_team(django_user_model.objects.create_user("vic", password="pw"), "Alpha", "engineer")
    body = _error(_file(token_client(client, viewer), cpu_hardware), 403)
    assert "requester" in body["message"]


def test_cancel_is_for_the_owner(client, user, requester_only, cpu_hardware):
    poc_request = _measured(user, cpu_hardware, finish=False)
    PocRequest.objects.filter(pk=poc_request.pk).update(status="queued")
    _error(
        token_client(client, requester_only).post(reverse("api:request-cancel", args=[poc_request.pk])), 403
    )
    response = token_client(client, user).post(reverse("api:request-cancel", args=[poc_request.pk]))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


def test_candidates_carry_their_measurements_and_intervals(api, user, cpu_hardware):
    poc_request = _measured(user, cpu_hardware)
    rows = api.get(reverse("api:candidate-list", args=[poc_request.pk])).json()
    assert [r["label"] for r in rows] == ["baseline", "quantize.dynamic-int8"]
    assert rows[1]["accuracy"] == 0.89 and rows[1]["latency"][0]["batch_size"] == 1
    assert rows[1]["links"]["download"] is None  # nothing saved to download


def test_techniques_and_hardware(api):
    techniques = {t["name"]: t for t in api.get(reverse("api:technique-list")).json()}
    assert {p["name"] for p in techniques["prune.magnitude"]["params"]} >= {"amount"}
    hardware = api.get(reverse("api:hardware-list")).json()
    assert any(h["name"] == "CPU, 2 vCPU" and Decimal(h["price_per_hour"]) > 0 for h in hardware)


def _artifact(candidate) -> Path:
    folder = settings.ARTIFACTS_ROOT / f"request-{candidate.request_id}" / f"candidate-{candidate.pk}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"\0" * 5000)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "README.md").write_text("Saved as plain transformers.")
    candidate.artifact_path = str(folder)
    candidate.save(update_fields=["artifact_path"])
    return folder


def test_download_a_candidate_with_its_model_card(api, client, user, other_team_user, cpu_hardware):
    poc_request = _measured(user, cpu_hardware)
    candidate = poc_request.candidates.get(position=1)
    _artifact(candidate)
    link = api.get(reverse("api:candidate-detail", args=[poc_request.pk, candidate.pk])).json()["links"][
        "download"
    ]
    response = api.get(link)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    folder = f"request-{poc_request.pk}-candidate-{candidate.pk}"
    assert set(archive.namelist()) == {
        f"{folder}/{n}" for n in ("README.md", "model.safetensors", "tokenizer.json")
    }
    card = archive.read(f"{folder}/README.md").decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-classification"
    assert "quantize.dynamic-int8" in front["tags"] and front["base_model"] == "demo"
    metrics = {m["type"]: m for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics["accuracy"]["value"] == 0.89
    assert "p95_target_ms" in card and "## Environment" in card and "Saved as plain transformers." in card
    # The raw-figures page links the same archive; another team's is 404 on the page URL too.
    client.force_login(user)
    page = client.get(
        reverse("planner:candidate-measurement", args=[poc_request.pk, candidate.pk])
    ).content.decode()
    page_link = reverse("planner:candidate-download", args=[poc_request.pk, candidate.pk])
    assert page_link in page and client.get(page_link).status_code == 200
    client.force_login(other_team_user)
    assert client.get(page_link).status_code == 404


def test_artifact_paths_outside_the_artifacts_folder_are_not_served(api, user, cpu_hardware, tmp_path):
    poc_request = _measured(user, cpu_hardware)
    candidate = poc_request.candidates.get(position=1)
    (tmp_path / "config.json").write_text("{}")
    candidate.artifact_path = str(tmp_path)
    candidate.save(update_fields=["artifact_path"])
    _error(api.get(reverse("api:candidate-download", args=[poc_request.pk, candidate.pk])), 404)


def test_the_schema_validates_and_names_every_endpoint(api, client, user):
    from django.core.management import call_command

    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    assert schema["openapi"].startswith("3.")
    for path in (
        "/api/v1/requests/",
        "/api/v1/requests/{id}/decision/",
        "/api/v1/portfolio/",
        "/api/v1/techniques/",
    ):
        assert path in schema["paths"], sorted(schema["paths"])
    assert api.get(reverse("api:schema")).status_code == 200
    client.force_login(user)
    docs = client.get(reverse("api:docs"))
    assert docs.status_code == 200 and "<style" not in docs.content.decode()
    assert "script-src 'self'" in docs["Content-Security-Policy"]


# Every field of the request form, as the API takes it: the values a filing below sets, each valid on the
# CPU profile, and the row attribute that stores it.
FORM_VALUES = {
    "serving_runtime": "onnxruntime",
    "mode": "search",
    "search_max_trials": 5,
    "search_max_minutes": 90,
    "requests_per_day": 300_000,
    "peak_factor": Decimal("3"),
    "target_utilisation": Decimal("0.6"),
    "horizon_months": 24,
    "engineering_hours": Decimal("16"),
    "engineering_rate": Decimal("120"),
    "maintenance_hours_per_month": Decimal("2"),
    "teacher_updates_per_year": 4,
    "rerun_schedule": "quarterly",
}


def test_the_api_takes_every_field_of_the_request_form():
    from planner.api.serializers import RequestCreateSerializer
    from planner.forms import PocRequestForm

    fields = RequestCreateSerializer().fields
    assert [n for n in fields if n in PocRequestForm.Meta.fields] == list(PocRequestForm.Meta.fields)
    assert {"team", "pipelines", "params"} <= set(fields)
    assert {n for n, f in fields.items() if f.required} == {"title", "dataset_ref", "hardware"}


def test_a_field_added_to_the_form_is_in_the_api_with_its_rules(monkeypatch):
    from django import forms

    from planner.api.serializers import RequestCreateSerializer
    from planner.forms import PocRequestForm

    monkeypatch.setattr(PocRequestForm.Meta, "fields", [*PocRequestForm.Meta.fields, "replicas"])
    monkeypatch.setitem(
        PocRequestForm.base_fields,
        "replicas",
        forms.IntegerField(min_value=1, max_value=8, required=False, help_text="Replicas at peak."),
    )
    field = RequestCreateSerializer().fields["replicas"]
    assert (field.min_value, field.max_value, field.required) == (1, 8, False)
    assert field.help_text == "Replicas at peak."


def test_a_filing_stores_every_form_field_it_sets(api, cpu_hardware, tiny_model_dir, sent):
    response = _file(api, cpu_hardware, candidates=None, **{k: str(v) for k, v in FORM_VALUES.items()})
    assert response.status_code == 201, response.content[:2000]
    body = response.json()
    poc_request = PocRequest.objects.get(pk=body["id"])
    for name, value in FORM_VALUES.items():
        assert getattr(poc_request, name) == value, name
    assert (body["serving_runtime"], body["mode"], body["search_max_trials"]) == ("onnxruntime", "search", 5)


def test_a_request_filed_with_a_serving_runtime_stores_it(api, cpu_hardware, tiny_model_dir, sent):
    response = _file(api, cpu_hardware, serving_runtime="openvino")
    assert response.status_code == 201, response.content[:2000]
    body = response.json()
    assert (body["serving_runtime"], body["mode"]) == ("openvino", "pipelines")
    poc_request = PocRequest.objects.get(pk=body["id"])
    assert (poc_request.serving_runtime, poc_request.mode) == ("openvino", "pipelines")
    assert [c["label"] for c in body["candidates"]] == ["baseline", "quantize.dynamic-int8"]


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"serving_runtime": "vllm"}, "serving_runtime"),  # vLLM serves on a GPU
        ({"serving_runtime": "tensorrt"}, "serving_runtime"),
        ({"mode": "search", "candidates": None}, "search_max_trials"),  # a search needs a budget
        ({"mode": "search", "search_max_trials": "0"}, "search_max_trials"),
        ({"mode": "search", "search_max_minutes": "20000"}, "search_max_minutes"),
        ({"mode": "guess"}, "mode"),
    ],
)
def test_the_new_form_fields_are_checked_by_the_forms_rules(
    api, cpu_hardware, tiny_model_dir, sent, overrides, field
):
    body = _error(_file(api, cpu_hardware, **overrides), 400)
    assert field in body["fields"], body
    assert not PocRequest.objects.exists() and not sent


def test_the_schema_lists_every_form_field_with_its_choices_and_bounds(api):
    from planner.forms import PocRequestForm

    schema = yaml.safe_load(api.get(reverse("api:schema")).content)
    components = schema["components"]["schemas"]
    body = schema["paths"]["/api/v1/requests/"]["post"]["requestBody"]["content"]
    for media in ("application/json", "multipart/form-data"):
        assert body[media]["schema"]["$ref"].endswith("/RequestCreateRequest")
    create = components["RequestCreateRequest"]
    assert set(PocRequestForm.Meta.fields) <= set(create["properties"])
    assert set(create["required"]) == {"title", "dataset_ref", "hardware"}

    def enum(name):
        ref = next(s["$ref"] for s in create["properties"][name]["oneOf"] if "BlankEnum" not in s["$ref"])
        return components[ref.rsplit("/", 1)[1]]["enum"]

    assert enum("serving_runtime") == [c.value for c in PocRequest.ServingRuntime]
    assert enum("mode") == ["pipelines", "search"]
    trials = create["properties"]["search_max_trials"]
    assert (trials["type"], trials["minimum"], trials["maximum"]) == ("integer", 1, 200)
    assert create["properties"]["search_max_minutes"]["maximum"] == 10_080
    shown = components["PocRequest"]["properties"]
    assert {"serving_runtime", "mode", "search_max_trials", "search_max_minutes"} <= set(shown)
