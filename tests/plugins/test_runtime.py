"""Runtime techniques: served through one interface, stored in the runtime's own code-free format with
safetensors weights, reloaded with the same logits, and run by the runtime library directly."""

from pathlib import Path

import numpy as np
import pytest
import torch

from plugins import runtime
from plugins.artifacts import PICKLE_SUFFIXES, ModelLoadError, load_pretrained, save_model
from plugins.base import Context, Example
from tests.tiny import LABELS, tiny_lm_texts, tiny_texts


def _context(task, model, tokenizer):
    if task == "causal-lm":
        train, labels = [Example(t) for t in tiny_lm_texts(24)[:18]], []
    else:
        train, labels = [Example(t, label) for t, label in tiny_texts(per_label=6)], LABELS
    return Context(
        task=task,
        device="cpu",
        seed=0,
        tokenizer=tokenizer,
        teacher=model,
        train=train,
        eval=[],
        labels=labels,
        max_length=32,
    )


@pytest.fixture(scope="module")
def served_classifier(tiny_model_dir, tmp_path_factory):
    """The tiny classifier on ONNX Runtime with static int8 (calibrated), saved."""
    model, tokenizer = load_pretrained(tiny_model_dir, "sequence-classification")
    ctx = _context("sequence-classification", model, tokenizer)
    params = runtime.OnnxRuntime.clean_params({"quantization": "static-int8", "calibration_samples": 8})
    served = runtime.OnnxRuntime().apply(model, ctx, params)
    out = tmp_path_factory.mktemp("ort") / "out"
    save_model(served, tokenizer, out, card="# test\n")
    return model, tokenizer, served, out


def test_onnxruntime_static_int8_round_trips_and_runs_as_plain_onnx(served_classifier):
    import onnxruntime as ort

    model, tokenizer, served, out = served_classifier
    assert {p.name for p in out.iterdir()} >= {
        "model.onnx",
        "model.safetensors",
        "config.json",
        "roi_planner.json",
    }
    reloaded, _ = load_pretrained(out, "sequence-classification")
    batch = tokenizer(["goal team rain", "flour sugar bake today", "snow"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected, actual, eager = served(**batch).logits, reloaded(**batch).logits, model(**batch).logits
    assert torch.allclose(actual, expected, atol=1e-5)
    assert torch.allclose(actual, eager, atol=0.05)  # int8: close to the fp32 model, not equal
    # The stored graph is plain ONNX: ONNX Runtime runs it by hand, reading its weights from safetensors.
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
    assert np.allclose(session.run(None, feed)[0], actual.numpy(), atol=1e-5)


def test_served_model_counts_its_stored_weights(served_classifier):
    from workers.measure import count_parameters

    model, _, served, out = served_classifier
    reloaded, _ = load_pretrained(out, "sequence-classification")
    eager = count_parameters(model)[0]
    for candidate in (served, reloaded):
        parameters, nonzero = count_parameters(candidate)
        assert 0.8 * eager <= parameters <= 1.2 * eager and 0 < nonzero <= parameters


def test_runtime_formats_hold_no_pickle_and_refuse_foreign_weights(served_classifier, tmp_path):
    import shutil

    import onnx

    *_, out = served_classifier
    assert not [p for p in out.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    assert "auto_map" not in (out / "config.json").read_text()
    # A graph whose weights live in another file (here a .bin next to it) is refused before any runtime runs.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    proto = onnx.load_model(str(copy / "model.onnx"), load_external_data=False)
    tensor = next(t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    next(e for e in tensor.external_data if e.key == "location").value = "weights.data"
    onnx.save_model(proto, str(copy / "model.onnx"))
    with pytest.raises(ModelLoadError, match="weights.data"):
        load_pretrained(copy, "sequence-classification")


@pytest.mark.parametrize("quantization", ["int8-weights", "int4-weights"])
def test_openvino_compressed_llm_generates_with_its_cache_and_round_trips(
    quantization, tiny_llama_dir, tmp_path
):
    import openvino as ov

    from workers.measure import _generate

    model, tokenizer = load_pretrained(tiny_llama_dir, "causal-lm")
    ctx = _context("causal-lm", model, tokenizer)
    served = runtime.OpenVino().apply(
        model, ctx, runtime.OpenVino.clean_params({"quantization": quantization})
    )
    save_model(served, tokenizer, tmp_path / "out", card="# test\n")
    assert (tmp_path / "out" / "openvino_model.xml").is_file()
    reloaded, _ = load_pretrained(tmp_path / "out", "causal-lm")
    from plugins.training import encode_causal_lm

    prompts = encode_causal_lm(
        tokenizer, ["goal team rain", "flour sugar bake"], max_length=16, device="cpu", padding_side="left"
    )
    with torch.inference_mode():
        assert torch.equal(_generate(served, prompts, 4, "cpu"), _generate(reloaded, prompts, 4, "cpu"))
        full = reloaded(**prompts).logits
    # The IR reads as it is with the safetensors file as its weights.
    compiled = ov.Core().compile_model(
        ov.Core().read_model(
            str(tmp_path / "out" / "openvino_model.xml"), str(tmp_path / "out" / "model.safetensors")
        ),
        "CPU",
    )
    assert [o.get_any_name() for o in compiled.outputs][0] == "logits"
    assert full.shape[:2] == prompts["input_ids"].shape


def test_serving_runtimes_follow_the_device():
    assert runtime.serving_refusal("openvino", device="cpu") is None
    assert runtime.serving_refusal("vllm", device="cuda") is None
    assert "cpu" in runtime.serving_refusal("vllm", device="cpu")
    assert runtime.baseline_pipeline("pytorch") == []
    assert runtime.baseline_pipeline("onnxruntime") == [{"technique": "runtime.onnxruntime", "params": {}}]


@pytest.mark.gpu
def test_vllm_serves_a_tiny_llama_on_the_gpu(tiny_llama_dir, tmp_path):
    from workers.measure import _generate

    model, tokenizer = load_pretrained(tiny_llama_dir, "causal-lm", device="cuda")
    ctx = _context("causal-lm", model, tokenizer)
    ctx.work_dir = str(tmp_path)
    ctx.device = "cuda"
    served = runtime.Vllm().apply(model, ctx, runtime.Vllm.clean_params({}))
    prompt = tokenizer(["goal team rain"], return_tensors="pt").to("cuda")
    assert _generate(served, prompt, 3, "cuda").shape == (1, 3)
    save_model(served, tokenizer, tmp_path / "out", card="# test\n")
    assert Path(tmp_path / "out" / "model.safetensors").is_file()


def test_candidates_are_served_on_the_requests_runtime_unless_they_end_in_a_quantizer():
    from plugins.runtime import served_pipeline

    distill = [{"technique": "distill.kd", "params": {"student_layers": 1}}]
    assert served_pipeline(distill, "pytorch") == (distill, "")
    assert served_pipeline([], "openvino") == ([{"technique": "runtime.openvino", "params": {}}], "")
    steps, note = served_pipeline(distill, "openvino")
    assert steps == [*distill, {"technique": "runtime.openvino", "params": {}}]
    assert note.startswith("openvino, as the current model is")
    own = [*distill, {"technique": "runtime.onnxruntime", "params": {"quantization": "dynamic-int8"}}]
    assert served_pipeline(own, "openvino") == (own, "")
    quantized = [*distill, {"technique": "quantize.dynamic-int8", "params": {}}]
    steps, note = served_pipeline(quantized, "onnxruntime")
    assert steps == quantized and note.startswith("PyTorch: a model changed by quantize.dynamic-int8")


def test_onnxruntime_sessions_do_not_spin_after_a_call():
    """Spinning worker threads would slow whatever runs next on the cores (the model timed after it, a
    replica's server): the sessions the technique builds turn it off."""
    from onnx import TensorProto, helper

    from plugins.runtime.onnx_runtime import session

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    built = session(model.SerializeToString(), threads=1)
    assert built.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert built.run(None, {"x": np.array([[-1.0, 2.0, -3.0, 4.0]], dtype=np.float32)})[0].tolist() == [
        [0.0, 2.0, 0.0, 4.0]
    ]
