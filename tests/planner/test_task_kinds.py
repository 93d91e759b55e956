"""The task object, the column list behind the candidates table and CSV, and parameters per pipeline step."""

import csv
import dataclasses
import io
import re

import pytest
from django.urls import reverse

from planner import roi, task_kinds
from planner.dashboard import columns
from planner.forms import PocRequestForm
from planner.models import PocRequest
from planner.pipeline_fields import parse_steps
from planner.task_kinds import CLASSIFICATION, TEXT_GENERATION, task_kind
from tests.planner.factories import gen_sweep, measured_generation_request, measured_request, sweep
from tests.planner.test_views import valid_post


@pytest.fixture
def scenario(user, cpu_hardware):
    return measured_request(owner=user, hardware=cpu_hardware, models=[(0.90, sweep(20)), (0.89, sweep(10))])


def _csv(response) -> list[dict[str, str]]:
    text = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text[1:])))


def _headers(body: str) -> list[str]:
    table = body[body.index('id="candidates"') : body.index("</thead>", body.index('id="candidates"'))]
    return re.findall(r'<th data-column="([^"]+)"', table)


def test_each_task_answers_what_differs():
    assert task_kind(None) is CLASSIFICATION and task_kind("causal-lm") is TEXT_GENERATION
    assert (CLASSIFICATION.quality_metric, TEXT_GENERATION.quality_metric) == ("accuracy", "perplexity")
    assert not CLASSIFICATION.is_generative and TEXT_GENERATION.is_generative
    assert set(CLASSIFICATION.target_defaults) == {"accuracy_floor_pct"}
    assert "per_token_target_ms" in TEXT_GENERATION.required_targets
    assert TEXT_GENERATION.whatif_fields == ("per_token_target_ms", "output_tokens_per_request")
    assert CLASSIFICATION.cards_template == "planner/dashboard/classification/cards.html"
    assert TEXT_GENERATION.demo_model_noun == "demo LLM"


def test_the_table_and_the_csv_come_from_one_column_list(client_logged_in, scenario):
    body = client_logged_in.get(reverse("planner:request-detail", args=[scenario.pk])).content.decode()
    shown = _headers(body)
    by_name = {c.name: c for c in CLASSIFICATION.columns}
    assert set(shown) <= set(by_name) and len(shown) == len(set(shown))
    # A manager's columns first (the money among them), the engineer's details after them.
    groups = [by_name[name].group for name in shown]
    assert groups == sorted(groups) and by_name[shown[-1]].detail
    assert shown.index("monthly_savings") < shown.index("p50_ms_batch1")
    # The engineer's columns are marked, header and cells, for the CSS toggle.
    assert re.search(r'<th [^>]*class="[^"]*\bdetail\b', body) and 'for="show-details"' in body
    rows = _csv(client_logged_in.get(reverse("planner:request-csv", args=[scenario.pk])))
    assert list(rows[0]) == columns.csv_header(CLASSIFICATION.columns)
    assert {name for name in shown if by_name[name].csv} <= set(rows[0])


def test_iterations_and_mean_latency_per_batch_size_reach_the_raw_page_and_the_csv(
    client_logged_in, scenario
):
    int8 = scenario.candidates.get(position=1)
    rows = _csv(client_logged_in.get(reverse("planner:request-csv", args=[scenario.pk])))
    # sweep(10): p95 10 ms × √b, mean 0.85 × p95; 100 timed iterations at each batch size.
    assert rows[1]["iterations_by_batch"] == "1: 100; 8: 100"
    assert rows[1]["mean_ms_by_batch"].startswith("1: 8.5; 8: 24.04")
    page = client_logged_in.get(reverse("planner:candidate-measurement", args=[scenario.pk, int8.pk]))
    body = page.content.decode()
    assert '<th class="num" data-column="iterations">Iterations</th>' in body
    assert '<th class="num" data-column="mean_ms">Mean</th>' in body and "8.50 ms" in body


def test_a_new_sweep_figure_needs_one_entry_in_the_column_list(client_logged_in, scenario, monkeypatch):
    """A figure added to a task's sweep shows on the raw-figures page, and in the CSV by batch size."""
    figure = columns.Figure("p99_ms", "p99 again", lambda p: p.p99_ms, str, by_batch=True)
    sweep_figures = (*CLASSIFICATION.sweep_columns, figure)
    kind = dataclasses.replace(
        CLASSIFICATION, sweep_columns=sweep_figures, columns=columns.task_columns(False, sweep_figures)
    )
    monkeypatch.setitem(task_kinds.TASK_KINDS, roi.CLASSIFICATION, kind)
    int8 = scenario.candidates.get(position=1)
    body = client_logged_in.get(
        reverse("planner:candidate-measurement", args=[scenario.pk, int8.pk])
    ).content.decode()
    assert 'data-column="p99_ms">p99 again</th>' in body and '<td class="num">11.0' in body
    rows = _csv(client_logged_in.get(reverse("planner:request-csv", args=[scenario.pk])))
    assert rows[1]["p99_ms_by_batch"].startswith("1: 11.0")


def test_generation_has_one_candidates_template_with_its_own_columns(client_logged_in, user, cpu_hardware):
    base = gen_sweep([(1, 10.0, 15.0, 10.0, 12.0), (4, 20.0, 30.0, 20.0, 25.0)])
    int8 = gen_sweep([(1, 5.0, 8.0, 5.0, 7.0), (4, 10.0, 20.0, 10.0, 15.0)])
    poc_request = measured_generation_request(
        owner=user, hardware=cpu_hardware, models=[(12.0, base), (12.6, int8)]
    )
    body = client_logged_in.get(reverse("planner:request-detail", args=[poc_request.pk])).content.decode()
    shown = _headers(body)
    assert shown[:5] == ["candidate", "status", "perplexity", "ttft_p95_ms_batch1", "itl_p95_ms_batch1"]
    assert "accuracy" not in shown and "cost_per_1m_output_tokens" in shown
    measured = poc_request.candidates.get(position=1)
    page = client_logged_in.get(reverse("planner:candidate-measurement", args=[poc_request.pk, measured.pk]))
    assert '<th class="num" data-column="mean_ms">Whole reply mean</th>' in page.content.decode()


def test_the_raw_page_marks_the_batch_sizes_roi_accepts(client_logged_in, scenario):
    # p95 target 30 ms: batch 1 (10 ms) and batch 8 (28.3 ms) meet it for int8; the baseline's batch 8
    # (56.6 ms) does not.
    base = scenario.candidates.get(position=0)
    body = client_logged_in.get(
        reverse("planner:candidate-measurement", args=[scenario.pk, base.pk])
    ).content.decode()
    assert body.count('<tr class="meets">') == 1 and '<tr class="meets"><td>1</td>' in body


# --- parameters per pipeline step ---------------------------------------------------------------------


def _index(label: str) -> int:
    form = PocRequestForm(teams=None)
    return [value for value, _label in form.fields["candidates"].choices].index(label)


def test_two_candidates_prune_by_different_amounts(client_logged_in, cpu_hardware, tiny_model_dir, sent):
    hybrid = "prune.layers → quantize.dynamic-int8"
    n = _index(hybrid)
    data = valid_post(
        cpu_hardware,
        candidates=["prune.layers", hybrid],
        custom_pipelines="prune.ffn(amount=0.3)\nprune.ffn(amount=0.6) → quantize.dynamic-int8(per_channel=false)",
        # tiny-bert has 2 layers: keeping 1 is the layer count a layer-dropping step may ask of it.
        **{"param:prune.layers:keep": "1", PocRequestForm.step_field_name(n, 1, "embeddings"): "false"},
    )
    response = client_logged_in.post(reverse("planner:request-create"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    pipelines = [c.pipeline for c in PocRequest.objects.get().candidates.all()][1:]
    assert [
        p[-1]["params"].get("embeddings") for p in pipelines if p[-1]["technique"] == "quantize.dynamic-int8"
    ][0] is False
    ffn = [p[0]["params"]["amount"] for p in pipelines if p[0]["technique"] == "prune.ffn"]
    assert ffn == [0.3, 0.6]
    assert pipelines[-1][1]["params"]["per_channel"] is False


def test_a_step_parameter_out_of_bounds_is_explained(client_logged_in, cpu_hardware, tiny_model_dir, sent):
    data = valid_post(cpu_hardware, candidates=[], custom_pipelines="prune.ffn(amount=2)")
    body = client_logged_in.post(reverse("planner:request-create"), data).content.decode()
    section = body[body.index('id="field-custom_pipelines"') :][:3000]
    assert "prune.ffn: step 1" in section and "above the maximum" in section
    assert not PocRequest.objects.exists()


def test_the_candidate_list_offers_each_steps_parameters(client_logged_in, tiny_model_dir):
    body = client_logged_in.get(reverse("planner:request-create")).content.decode()
    n = _index("prune.ffn")
    assert f'name="step:{n}:0:amount"' in body and 'class="step-params"' in body
    assert 'name="param:prune.ffn:amount"' in body  # the technique's value, for every step that uses it


@pytest.mark.parametrize(
    ("line", "steps"),
    [
        ("prune.ffn → quantize.dynamic-int8", [("prune.ffn", {}), ("quantize.dynamic-int8", {})]),
        (
            "prune.ffn(amount=0.3, x = 1) > quantize.half",
            [("prune.ffn", {"amount": "0.3", "x": "1"}), ("quantize.half", {})],
        ),
        ("distill.kd()->prune.layers", [("distill.kd", {}), ("prune.layers", {})]),
        ("  ", []),
    ],
)
def test_typed_pipelines_with_parameters(line, steps):
    assert parse_steps(line) == steps


@pytest.mark.parametrize("line", ["prune.ffn(amount=0.3", "prune.ffn(amount)", "prune.ffn((a=1))", "a)b"])
def test_typed_pipelines_that_cannot_be_read(line):
    with pytest.raises(ValueError):
        parse_steps(line)
