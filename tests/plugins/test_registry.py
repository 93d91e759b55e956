import pytest

from plugins import registry
from plugins.base import Param, ParamError, Technique


class _Prune(Technique):
    """A test technique."""

    name = "test.prune"
    title = "Test prune"
    family = "prune"
    params = (Param("amount", float, 0.5, "Share of weights to drop.", minimum=0.0, maximum=0.95),)


@pytest.fixture
def extra_technique():
    registry.register(_Prune)
    yield _Prune
    registry.unregister(_Prune.name)


def test_builtin_techniques_come_from_the_entry_point_group():
    assert "quantize.dynamic-int8" in registry.techniques()
    assert registry.version_of("quantize.dynamic-int8").startswith("roi-planner ")


def test_validate_pipeline_fills_defaults_and_cleans_types(extra_technique):
    steps = registry.validate_pipeline(
        [{"technique": "test.prune", "params": {"amount": "0.25"}}, {"technique": "quantize.dynamic-int8"}],
        device="cpu",
        task="sequence-classification",
    )
    assert steps == [
        {"technique": "test.prune", "params": {"amount": 0.25}},
        {"technique": "quantize.dynamic-int8", "params": {"per_channel": True, "embeddings": True}},
    ]


@pytest.mark.parametrize(
    ("steps", "device", "message"),
    [
        ([{"technique": "nope"}], "cpu", "Unknown technique 'nope'"),
        ([{"technique": "quantize.dynamic-int8"}], "cuda", "runs on cpu, not cuda"),
        (
            [{"technique": "quantize.dynamic-int8"}, {"technique": "test.prune"}],
            "cpu",
            "must be the last step",
        ),
        ([{"technique": "test.prune", "params": {"amount": 2}}], "cpu", "above the maximum 0.95"),
        ([{"technique": "test.prune", "params": {"amount": "lots"}}], "cpu", "expected float"),
        ([{"technique": "test.prune", "params": {"amount": "nan"}}], "cpu", "expected float"),
        ([{"technique": "test.prune", "params": {"ratio": 1}}], "cpu", "has no parameter ratio"),
        (["quantize"], "cpu", "expected an object"),
    ],
)
def test_validate_pipeline_refuses_with_the_reason(extra_technique, steps, device, message):
    with pytest.raises(ParamError, match=message):
        registry.validate_pipeline(steps, device=device, task="sequence-classification")


def test_task_refusal(extra_technique):
    with pytest.raises(ParamError, match="supports sequence-classification, not causal-lm"):
        registry.validate_pipeline([{"technique": "test.prune"}], device="cpu", task="causal-lm")


def test_param_choices_and_bools():
    choice = Param("dtype", str, "bf16", "Precision.", choices=("bf16", "fp16"))
    assert choice.clean("fp16") == "fp16"
    with pytest.raises(ParamError, match="not one of bf16, fp16"):
        choice.clean("fp8")
    flag = Param("on", bool, False, "Flag.")
    assert flag.clean("true") is True and flag.clean(None) is False
    with pytest.raises(ParamError):
        flag.clean("maybe")
    count = Param("layers", int, 2, "Layers.", minimum=1)
    assert count.clean("3") == 3
    with pytest.raises(ParamError, match="expected int"):
        count.clean(2.5)


def test_broken_plugin_is_reported_not_raised(monkeypatch, caplog):
    from importlib.metadata import EntryPoint

    broken = EntryPoint(name="broken.thing", value="no_such_module_xyz:Thing", group=registry.GROUP)
    real = registry.entry_points

    def fake_entry_points(group):
        return [*real(group=group), broken]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    registry.reload()
    try:
        assert "quantize.dynamic-int8" in registry.techniques()
        [failure] = registry.broken()
        assert failure.name == "broken.thing" and "No module named" in failure.error
        assert "Technique broken.thing from ? failed to load" in caplog.text
    finally:
        monkeypatch.undo()
        registry.reload()


# --- model-aware checks, step limit and order ------------------------------------------------------------


class _Runtime(Technique):
    """A test runtime step."""

    name = "test.runtime"
    title = "Test runtime"
    family = "runtime"


class _BrokenHook(Technique):
    """A test technique whose model check has a bug."""

    name = "test.broken-hook"
    title = "Broken hook"
    family = "prune"

    @classmethod
    def check_for_model(cls, params, model_info):
        raise KeyError("num_layers")


@pytest.fixture
def more_techniques(extra_technique):
    for cls in (_Runtime, _BrokenHook):
        registry.register(cls)
    yield
    for cls in (_Runtime, _BrokenHook):
        registry.unregister(cls.name)


def _info(layers: int = 6):
    from plugins.model_info import ModelInfo

    return ModelInfo(
        task="sequence-classification", model_type="bert", layers=layers, hidden_size=8, vocab_size=9
    )


def test_the_default_hooks_accept_any_model_and_change_nothing(extra_technique):
    info = _info()
    assert _Prune.check_for_model({"amount": 0.5}, info) is None
    assert _Prune.model_after({"amount": 0.5}, info) is info
    steps = [{"technique": "test.prune"}]
    assert registry.validate_pipeline(steps, device="cpu", task="sequence-classification", model_info=info)


def test_a_runtime_step_ends_the_pipeline_and_takes_no_quantized_model(more_techniques):
    task = "sequence-classification"
    ok = [{"technique": "test.prune"}, {"technique": "test.runtime"}]
    assert len(registry.validate_pipeline(ok, device="cpu", task=task)) == 2
    quantized = [{"technique": "quantize.dynamic-int8"}, {"technique": "test.runtime"}]
    with pytest.raises(
        ParamError,
        match="step 1: test.runtime exports a full-precision model and has its own int8 option; drop quantize.dynamic-int8",
    ):
        registry.validate_pipeline(quantized, device="cpu", task=task)
    with pytest.raises(
        ParamError, match="step 1: test.runtime hands the model to a runtime, so it must be the last"
    ):
        registry.validate_pipeline(
            [{"technique": "test.runtime"}, {"technique": "test.prune"}], device="cpu", task=task
        )


def test_the_step_limit_is_checked_before_anything_else(extra_technique):
    steps = [{"technique": "no.such"}] * (registry.MAX_PIPELINE_STEPS + 1)
    with pytest.raises(ParamError, match=f"at most {registry.MAX_PIPELINE_STEPS} steps; this one has 9"):
        registry.validate_pipeline(steps, device="cpu", task="sequence-classification")
    alternating = [{"technique": n} for n in ["test.prune", "prune.ffn"] * 4]
    assert len(registry.validate_pipeline(alternating, device="cpu", task="sequence-classification")) == 8


def test_a_plugin_whose_model_check_fails_is_logged_not_raised(more_techniques, caplog):
    steps = [{"technique": "test.broken-hook"}, {"technique": "prune.layers", "params": {"keep": 48}}]
    cleaned = registry.validate_pipeline(
        steps, device="cpu", task="sequence-classification", model_info=_info()
    )
    assert len(cleaned) == 2  # the later steps are left to the run, which checks the real model
    assert "The model check of test.broken-hook failed" in caplog.text
