"""Causal LMs in the worker: text data, the held-out split, perplexity, generation timing, the runner."""

import dataclasses
import json
import math

import pytest

from plugins.base import Example
from tests.tiny import tiny_lm_jsonl
from workers.datasets import DataError, parse_task_data, split_for, split_texts
from workers.measure import MeasureConfig, _generate, _percentile, evaluate_causal_lm, generation_sweep
from workers.runner import CandidateSpec, PocError, PocSpec, run_poc
from workers.timing import TimingPolicy

LM = "causal-lm"
# 10 rounds of 10 generations of each model per batch size: the 100 samples a TTFT p95 needs.
FAST = MeasureConfig(
    batch_sizes=(1, 4),
    timing=TimingPolicy(
        warmup=1, iterations_per_round=10, min_rounds=10, max_rounds=10, remeasure=0, resamples=500
    ),
    threads=1,
    new_tokens=5,
    max_prompt_tokens=8,
    generation_min_iterations=100,
)


@pytest.fixture(scope="module")
def tiny_llama(tiny_llama_dir):
    from plugins.artifacts import load_pretrained

    return load_pretrained(tiny_llama_dir, LM, device="cpu")


# --- data --------------------------------------------------------------------------------------------------


def test_plain_text_jsonl_and_csv_all_give_texts_without_labels():
    txt = parse_task_data(b"first prompt\n\n  second prompt  \r\nthird\n", "logs.txt", task=LM)
    assert [e.text for e in txt] == ["first prompt", "second prompt", "third"]
    jsonl = parse_task_data(
        b'{"prompt": "Q: 2+2?", "reference": "4"}\n{"text": "a document"}\n', "d.jsonl", task=LM
    )
    assert [(e.text, e.reference) for e in jsonl] == [("Q: 2+2?", "4"), ("a document", None)]
    csv = parse_task_data(b"text,label\nhello there,x\n", "d.csv", task=LM)
    assert [(e.text, e.label) for e in csv] == [("hello there", None)]  # labels are not used for LMs


@pytest.mark.parametrize(
    "raw, name, message",
    [
        (b"", "a.txt", "The file is empty"),
        (b"\n\n  \n", "a.txt", "The file is empty"),
        (b"x", "model.bin", "Upload a .txt file"),
        (
            b'{"prompt": "a"}\n{"question": "b"}\n',
            "a.jsonl",
            "Line 2: each object needs a 'prompt' or a 'text'",
        ),
        (b'{"prompt": "a", "text": "b"}\n', "a.jsonl", "Line 1: give either 'text'"),
        (b'{"prompt": "a", "reference": 4}\n', "a.jsonl", "Line 1: 'reference' must be a string"),
        (b'{"prompt": "a"\n', "a.jsonl", "Line 1: not valid JSON"),
        (b"ok\n\xff\xfe bad\n", "a.txt", "Line 2: the file is not UTF-8"),
    ],
)
def test_bad_text_files_get_a_message_that_says_what_to_fix(raw, name, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace("+", r"\+")):
        parse_task_data(raw, name, task=LM)


def test_text_split_is_deterministic_disjoint_and_order_independent():
    examples = parse_task_data(tiny_lm_jsonl(), "d.jsonl", task=LM)
    split = split_texts(examples)
    again = split_for(list(reversed(examples)), LM)
    assert [e.text for e in split.eval] == [e.text for e in again.eval]
    assert not {e.text for e in split.eval} & {e.text for e in split.train}
    assert split.labels == [] and len(split.eval) == round(len({e.text for e in examples}) * 0.2)


def test_too_few_texts_are_refused_with_the_count():
    with pytest.raises(DataError, match="at least 5 distinct texts .* found 2"):
        split_texts([Example("a"), Example("b"), Example("a")])


# --- measurement ---------------------------------------------------------------------------------------------


def test_perplexity_is_the_exponent_of_the_mean_token_loss(tiny_llama):
    import torch

    model, tokenizer = tiny_llama
    texts = [Example("the match goal team"), Example("rain cloud")]
    figures = evaluate_causal_lm(model, tokenizer, texts, device="cpu", max_length=16, batch_size=2)
    # By hand, text by text with transformers' own loss (mean over the predicted tokens).
    nll = tokens = 0
    with torch.inference_mode():
        for example in texts:
            ids = tokenizer(example.text, return_tensors="pt").input_ids
            loss = model(input_ids=ids, labels=ids).loss
            nll += float(loss) * (ids.shape[1] - 1)
            tokens += ids.shape[1] - 1
    assert figures["eval_tokens"] == tokens == 4
    assert figures["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert figures["exact_match"] is None


def test_incremental_decoding_matches_generate_with_left_padding(tiny_llama):
    import torch

    model, tokenizer = tiny_llama
    tokenizer.padding_side = "left"
    batch = tokenizer(["the match goal team score", "rain"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        ours = _generate(model, dict(batch), 6, "cpu")
        reference = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(ours, reference[:, batch["input_ids"].shape[1] :])


def test_prompts_are_left_padded_like_the_tokenizer_would(tiny_llama):
    from plugins.training import encode_causal_lm

    _, tokenizer = tiny_llama
    texts = ["the match goal team score", "rain"]
    ours = encode_causal_lm(tokenizer, texts, max_length=16, device="cpu", padding_side="left")
    tokenizer.padding_side = "left"
    theirs = tokenizer(texts, padding=True, return_tensors="pt")
    assert ours["input_ids"].tolist() == theirs["input_ids"].tolist()
    assert ours["attention_mask"].tolist() == theirs["attention_mask"].tolist() == [[1] * 5, [0] * 4 + [1]]


def test_exact_match_compares_greedy_completions_with_references(tiny_llama):
    import torch

    model, tokenizer = tiny_llama
    tokenizer.padding_side = "left"
    prompt = "the match goal"
    with torch.inference_mode():
        ids = _generate(model, dict(tokenizer([prompt], return_tensors="pt")), 2, "cpu")[0]
    produced = tokenizer.decode(ids, skip_special_tokens=True)
    examples = [Example(prompt, reference=produced.upper() + "!"), Example(prompt, reference="zzz")]
    figures = evaluate_causal_lm(model, tokenizer, examples, device="cpu", max_length=16, batch_size=2)
    assert figures["exact_match"] == 0.5 and figures["reference_examples"] == 2


def test_generation_sweep_times_first_token_and_each_next_token(tiny_llama):
    from workers.measure import fix_threads

    fix_threads(FAST.threads)  # as the runner does: one thread, steady on a shared host
    model, tokenizer = tiny_llama
    texts = [e.text for e in parse_task_data(tiny_lm_jsonl(), "d.jsonl", task=LM)]
    # 10 rounds of 13 generations: 130 TTFT samples (a p95 needs 100, a p99 500) and 520 inter-token
    # gaps (four per generation), enough for an ITL p99.
    config = dataclasses.replace(FAST, timing=dataclasses.replace(FAST.timing, iterations_per_round=13))
    points = generation_sweep(model, tokenizer, texts, device="cpu", config=config)
    assert [p.batch_size for p in points] == [1, 4]
    for p in points:
        assert p.iterations == 130 and p.new_tokens == 5 and p.rounds == 10
        assert 0 < p.ttft_p50_ms <= p.ttft_p95_ms and p.ttft_p99_ms is None  # too few samples: no guess
        assert 0 < p.itl_p50_ms <= p.itl_p95_ms <= p.itl_p99_ms
        # The TTFT and ITL intervals come from the same rounds as the request's.
        assert p.ttft_p95_low_ms <= p.ttft_p95_ms <= p.ttft_p95_high_ms
        assert p.itl_p95_low_ms <= p.itl_p95_ms <= p.itl_p95_high_ms
        assert p.p95_low_ms <= p.p95_ms <= p.p95_high_ms
        assert p.speedup is None  # timed against itself: no speedup to store
        # One request = the first token plus four decode steps; its median cannot beat the parts' medians.
        assert p.p50_ms >= p.ttft_p50_ms and p.p50_ms >= 4 * min(p.itl_p50_ms, p.ttft_p50_ms)
        assert p.tokens_per_s == pytest.approx(p.batch_size * 5 / p.p50_ms * 1000)
        assert 1 <= p.prompt_tokens <= 8


def test_percentiles_of_generation_use_the_same_interpolation():
    assert _percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


# --- the runner ----------------------------------------------------------------------------------------------


def _spec(model_dir, data, tmp_path, candidates):
    return PocSpec(
        task=LM,
        model_dir=str(model_dir),
        dataset=str(data),
        device="cpu",
        candidates=candidates,
        artifacts_dir=str(tmp_path),
        measure=FAST,
    )


def test_runner_measures_an_llm_baseline_and_a_quantized_candidate(tiny_llama_dir, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_bytes(tiny_lm_jsonl(references=True))
    spec = _spec(
        tiny_llama_dir,
        data,
        tmp_path,
        [
            CandidateSpec("base", []),
            CandidateSpec("int8", [{"technique": "quantize.weight-only", "params": {"bits": 8}}]),
        ],
    )
    progress = []
    results = list(run_poc(spec, lambda f, m: progress.append(m)))
    assert all(r.ok for r in results), [r.error for r in results]
    base, int8 = (r.measurement for r in results)
    for result, measured in zip(results, (base, int8), strict=True):
        assert measured.perplexity > 1 and result.environment["perplexity_tokens"] > 0
        assert 0 <= measured.exact_match <= 1 and result.environment["reference_examples"] == 12
        assert measured.accuracy is None and measured.macro_f1 is None
        assert [p.batch_size for p in measured.latency] == [1, 4]
        assert all(p.ttft_p95_ms > 0 and p.tokens_per_s > 0 for p in measured.latency)
        assert all(p.ttft_p95_low_ms <= p.ttft_p95_ms <= p.ttft_p95_high_ms for p in measured.latency)
        assert all(p.iterations == 100 and p.rounds == 10 for p in measured.latency)
    assert all(p.speedup is None for p in base.latency)  # the baseline, timed against itself
    assert all(0 < p.speedup_low <= p.speedup <= p.speedup_high for p in int8.latency)
    # int8 weights round each weight a little: perplexity moves, but barely.
    assert int8.perplexity == pytest.approx(base.perplexity, rel=0.05)
    assert int8.size_bytes < base.size_bytes
    assert any("perplexity" in m for m in progress) and any("generating 5 tokens" in m for m in progress)
    assert any(m.endswith("generating 5 tokens at batch size 4") for m in progress)
    assert results[0].environment["eval_examples"] == 12 and results[0].environment["train_examples"] == 48


def test_runner_measures_the_demo_text_when_asked_for_demo_data(tiny_llama_dir, tmp_path, monkeypatch):
    from workers import runner

    monkeypatch.setattr(
        runner, "load_demo_texts", lambda: [Example(f"the match {i} goal") for i in range(10)]
    )
    results = list(
        run_poc(_spec(tiny_llama_dir, "demo", tmp_path, [CandidateSpec("b", [])]), lambda f, m: None)
    )
    assert results[0].ok and results[0].environment["eval_examples"] == 2


def test_runner_refuses_too_little_text(tiny_llama_dir, tmp_path):
    data = tmp_path / "two.txt"
    data.write_text("one line\nanother line\n")
    with pytest.raises(PocError, match="at least 5 distinct texts"):
        list(run_poc(_spec(tiny_llama_dir, data, tmp_path, [CandidateSpec("b", [])]), lambda f, m: None))


def test_demo_llm_conversion_writes_safetensors_once(tmp_path, monkeypatch):
    """The GGUF → safetensors conversion on a tiny GGUF written here, then the cache on the second call."""
    pytest.importorskip("gguf")
    from workers import demo

    gguf_path = _tiny_gguf(tmp_path / "src")
    monkeypatch.setattr(demo, "demo_llm_gguf", lambda: gguf_path)
    out = tmp_path / "llm"
    record = demo.build_demo_llm(out)
    assert record["architecture"] == "LlamaForCausalLM" and record["layers"] == 2
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    monkeypatch.setattr(demo, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    assert demo.build_demo_llm(out) == record

    from plugins.artifacts import load_pretrained

    model, tokenizer = load_pretrained(out, LM, device="cpu")
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer("hello").input_ids


def _tiny_gguf(directory):
    """A 2-layer Llama written as GGUF (float32 tensors, a tiny BPE-free 'llama' vocabulary)."""
    import gguf
    import numpy as np

    directory.mkdir(parents=True)
    path = directory / "tiny.gguf"
    vocab = ["<unk>", "<s>", "</s>"] + [f"▁w{i}" for i in range(29)]
    hidden, ffn, heads, kv, layers = 16, 32, 4, 2, 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab)
    writer.add_token_scores([0.0] * len(vocab))
    writer.add_token_types([2, 3, 3] + [1] * (len(vocab) - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    rng = np.random.default_rng(0)

    def tensor(name, *shape):
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    tensor("token_embd.weight", len(vocab), hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        tensor(f"blk.{i}.attn_q.weight", hidden, hidden)
        tensor(f"blk.{i}.attn_k.weight", hidden // heads * kv, hidden)
        tensor(f"blk.{i}.attn_v.weight", hidden // heads * kv, hidden)
        tensor(f"blk.{i}.attn_output.weight", hidden, hidden)
        tensor(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_up.weight", ffn, hidden)
        tensor(f"blk.{i}.ffn_down.weight", hidden, ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.gpu
def test_runner_on_cuda_times_with_synchronize_and_records_the_gpu(tiny_llama_dir, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_bytes(tiny_lm_jsonl())
    spec = PocSpec(
        task=LM,
        model_dir=str(tiny_llama_dir),
        dataset=str(data),
        device="cuda",
        candidates=[CandidateSpec("base", []), CandidateSpec("bf16", [{"technique": "quantize.half"}])],
        artifacts_dir=str(tmp_path),
        measure=FAST,
    )
    results = list(run_poc(spec, lambda f, m: None))
    assert all(r.ok for r in results), [r.error for r in results]
    env = results[0].environment
    assert env["device"] == "cuda" and env["device_name"] and env["driver"]
    for result in results:
        assert 0 < result.measurement.peak_memory_bytes < 1e9  # CUDA max allocated, not the process RSS
        assert all(p.ttft_p50_ms > 0 for p in result.measurement.latency)
