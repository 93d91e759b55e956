"""The roi-planner console script against a live server, through the API with a token."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile

import pytest
from rest_framework.authtoken.models import Token

from planner import cli
from planner.models import PocRequest
from tests.api.test_api import _artifact, _measured
from tests.tiny import tiny_csv

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def options(live_server, user):
    return ["--url", live_server.url, "--token", Token.objects.create(user=user).key]


def test_cli_imports_without_django():
    code = "import sys, planner.cli; sys.exit(1 if 'django' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_submit_a_request_from_yaml_with_an_upload(
    options, cpu_hardware, tiny_model_dir, sent, tmp_path, capsys
):
    (tmp_path / "tickets.csv").write_bytes(tiny_csv())
    (tmp_path / "request.yaml").write_text(
        "title: Tickets from the CLI\n"
        "model_ref: tiny-bert\n"
        "dataset_ref: upload\n"
        "dataset_upload: tickets.csv\n"
        "p95_target_ms: 50\n"
        "accuracy_floor_pct: 90\n"
        f"hardware: {cpu_hardware.pk}\n"
        "candidates: [quantize.dynamic-int8]\n"
        "pipelines:\n  - [{technique: prune.magnitude, params: {amount: 0.25}}]\n"
    )
    assert cli.main([*options, "submit", str(tmp_path / "request.yaml")]) == 0
    poc_request = PocRequest.objects.get()
    assert f"Request {poc_request.pk} filed" in capsys.readouterr().out
    assert poc_request.dataset_file.name.endswith(".csv") and poc_request.candidates.count() == 3
    assert sent and sent[0][1] == [poc_request.pk]


def test_refused_input_is_said_with_its_field(options, cpu_hardware, tiny_model_dir, sent, tmp_path, capsys):
    (tmp_path / "request.json").write_text(
        json.dumps({"title": "x", "hardware": cpu_hardware.pk, "p95_target_ms": -1})
    )
    assert cli.main([*options, "submit", str(tmp_path / "request.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("400: ") and "p95_target_ms:" in err
    assert cli.main(["--url", options[1], "--token", "wrong", "list"]) == 1
    assert "401" in capsys.readouterr().err


def test_follow_results_and_download(options, user, cpu_hardware, tmp_path, capsys):
    poc_request = _measured(user, cpu_hardware)
    candidate = poc_request.candidates.get(position=1)
    _artifact(candidate)
    assert cli.main([*options, "status", str(poc_request.pk), "--follow"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("succeeded 100%") and "100%" in captured.err  # the progress bar
    assert cli.main([*options, "results", str(poc_request.pk)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["id", "label", "status"] and "quantize.dynamic-int8" in table[2]
    assert cli.main([*options, "results", str(poc_request.pk), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["label"] for r in rows] == ["baseline", "quantize.dynamic-int8"] and rows[1][
        "accuracy"
    ] == "0.89"
    assert cli.main([*options, "results", str(poc_request.pk), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[1]["latency"][0]["batch_size"] == 1
    assert cli.main([*options, "list", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == poc_request.pk
    target = tmp_path / "model.zip"
    assert cli.main([*options, "download", str(poc_request.pk), str(candidate.pk), "-o", str(target)]) == 0
    assert any(n.endswith("/README.md") for n in zipfile.ZipFile(target).namelist())
