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
