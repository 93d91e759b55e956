from unittest import mock

import pytest
import torch

from plugins.artifacts import load_pretrained, save_model
from plugins.base import Context, Example, TechniqueError
from plugins.distill import KnowledgeDistillation
from plugins.layers import keep_layers, layer_count
from plugins.training import kd_finetune
from tests.tiny import tiny_texts

TASK = "sequence-classification"


def _examples(per_label=10, seed=0, labelled=True):
    return [Example(text, label if labelled else None) for text, label in tiny_texts(per_label, seed)]


def _ctx(teacher, tokenizer, *, train=None, eval=None, teacher_tokenizer=None, reports=None):
    return Context(
        task=TASK,
        device="cpu",
        seed=0,
        tokenizer=tokenizer,
        teacher_tokenizer=teacher_tokenizer,
        teacher=teacher,
        train=_examples() if train is None else train,
        eval=eval or [],
        labels=["cooking", "sports", "weather"],
        report=(lambda f, m: reports.append((f, m))) if reports is not None else (lambda f, m: None),
    )


def _params(**overrides):
    return KnowledgeDistillation.clean_params(
        {"epochs": 1, "batch_size": 8, "student_layers": 1, **overrides}
    )


def _kl(student, teacher, tokenizer, texts, temperature=2.0):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        s = torch.log_softmax(student(**batch).logits / temperature, -1)
        t = torch.log_softmax(teacher(**batch).logits / temperature, -1)
    return torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean").item()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and spare threads spin when the machine is busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def teacher(tiny_model_dir):
    model, tokenizer = load_pretrained(tiny_model_dir, TASK)
    return model, tokenizer


def test_clean_params_gives_the_defaults():
    assert KnowledgeDistillation.clean_params({}) == {
        "student_layers": 2,
        "layers": "",
        "temperature": 2.0,
        "alpha": 0.5,
        "epochs": 2.0,
        "max_steps": 0,
        "learning_rate": 1e-4,
        "batch_size": 32,
        "max_length": 128,
        "hidden_weight": 0.0,
    }
    assert all(p.help for p in KnowledgeDistillation.params)
    assert "Hinton" in KnowledgeDistillation.description()
    assert "Sanh" in KnowledgeDistillation.description()


def test_student_has_the_asked_layers_and_config(teacher):
    model, tokenizer = teacher
    ctx = _ctx(model, tokenizer)
    student = KnowledgeDistillation().apply(model, ctx, _params())
    assert layer_count(student) == 1 and student.config.num_hidden_layers == 1
    assert layer_count(model) == 2 and model.config.num_hidden_layers == 2  # the input is left intact
    assert not student.training
    assert ctx.notes["kept layers"] == [0]
    assert ctx.notes["training steps"] == 4  # ceil(30 examples / 8) × 1 epoch
    assert ctx.notes["final loss"] > 0 and ctx.notes["seconds"] >= 0


def test_explicit_layers_keep_that_layers_weights(teacher):
    model, _ = teacher
    student = keep_layers(model, [1])
    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    assert student.bert.encoder.layer[0].attention.self.layer_idx == 0
    kept, original = student.bert.encoder.layer[0].state_dict(), model.bert.encoder.layer[1].state_dict()
    assert kept.keys() == original.keys()
    assert all(torch.equal(kept[k], original[k]) for k in kept)
    assert kept["output.dense.weight"].data_ptr() != original["output.dense.weight"].data_ptr()  # a copy
    assert torch.equal(student.classifier.weight, model.classifier.weight)


def test_layers_param_is_used_and_noted(teacher):
    model, tokenizer = teacher
    ctx = _ctx(model, tokenizer)
    KnowledgeDistillation().apply(model, ctx, _params(layers="1", max_steps=1))
    assert ctx.notes["kept layers"] == [1] and ctx.notes["training steps"] == 1


def test_distillation_lowers_the_kd_loss(teacher):
    from transformers import BertForSequenceClassification

    model, tokenizer = teacher
    with torch.no_grad():
        model.classifier.weight.mul_(40)  # a teacher with confident, input-dependent predictions
    torch.manual_seed(1)
    config = model.config.__class__.from_dict({**model.config.to_dict(), "num_hidden_layers": 1})
    fresh = BertForSequenceClassification(config).eval()
    texts = [e.text for e in _examples()]

    reports = []
    ctx = _ctx(model, tokenizer, train=_examples(), reports=reports)
    student = BertForSequenceClassification(config)
    student.load_state_dict(fresh.state_dict())
    student = kd_finetune(student, ctx, epochs=8, learning_rate=3e-3, batch_size=6, alpha=1.0)
    before, after = _kl(fresh, model, tokenizer, texts), _kl(student, model, tokenizer, texts)
    assert after < 0.2 * before, (before, after)
    # progress about every 5 % of the 40 steps (8 epochs × 30 / 6), not every step
    assert len(reports) == 21 and reports[-1][0] == 1.0 and reports[-1][1].startswith("step 40/40, loss ")


def test_unlabelled_texts_use_soft_targets_alone_deterministically(teacher):
    model, tokenizer = teacher

    def distil():
        ctx = _ctx(model, tokenizer, train=_examples(labelled=False))
        stats = {}
        student = kd_finetune(
            keep_layers(model, [0]), ctx, steps=2, batch_size=8, alpha=0.0, learning_rate=1e-3, stats=stats
        )
        return student, stats

    student, stats = distil()
    # alpha=0 would give the labels all the weight; without labels the soft targets still teach
    assert stats["steps"] == 2 and stats["first_loss"] > 0 and stats["final_loss"] > 0
    assert not student.training
    again, again_stats = distil()  # seeded from ctx.seed: shuffling and dropout repeat
    assert again_stats["final_loss"] == stats["final_loss"]
    first, second = student.state_dict(), again.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_hidden_state_loss_runs(teacher):
    model, tokenizer = teacher
    ctx = _ctx(model, tokenizer)
    student = KnowledgeDistillation().apply(model, ctx, _params(hidden_weight=5.0, max_steps=2))
    assert layer_count(student) == 1 and ctx.notes["training steps"] == 2
    with pytest.raises(TechniqueError, match="layer_map"):
        kd_finetune(keep_layers(model, [0]), ctx, steps=1, hidden_weight=1.0, layer_map=[0, 1, 2])


def test_teacher_reads_the_teacher_tokenizer(teacher):
    model, tokenizer = teacher
    student_tok, teacher_tok = mock.Mock(wraps=tokenizer), mock.Mock(wraps=tokenizer)
    train = _examples()
    ctx = _ctx(model, student_tok, teacher_tokenizer=teacher_tok, train=train)
    KnowledgeDistillation().apply(model, ctx, _params(max_steps=2))
    train_texts = {e.text for e in train}
    for spy in (student_tok, teacher_tok):
        assert spy.call_count >= 1
        assert all(set(call.args[0]) <= train_texts for call in spy.call_args_list)


def test_round_trips_through_save_and_load(teacher, tmp_path):
    model, tokenizer = teacher
    student = KnowledgeDistillation().apply(model, _ctx(model, tokenizer), _params(max_steps=2))
    save_model(student, tokenizer, tmp_path / "student", card="# student\n")
    assert not list((tmp_path / "student").glob("*.bin"))
    reloaded, reloaded_tokenizer = load_pretrained(tmp_path / "student", TASK)
    assert reloaded.config.num_hidden_layers == 1 and layer_count(reloaded) == 1
    batch = reloaded_tokenizer(
        ["rain cloud wind", "goal team score player"], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        assert torch.equal(student(**batch).logits, reloaded(**batch).logits)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"student_layers": 2}, "not smaller than the model, which has 2"),
        ({"student_layers": 5}, "not smaller than the model"),
        ({"layers": "0,1"}, "not smaller than the model"),
        ({"layers": "3"}, "do(es)? not exist"),
        ({"layers": "0,x"}, "comma-separated list"),
    ],
)
def test_refuses_students_that_are_not_smaller_or_bad_layers(teacher, overrides, message):
    model, tokenizer = teacher
    with pytest.raises(TechniqueError, match=message):
        KnowledgeDistillation().apply(model, _ctx(model, tokenizer), _params(**overrides))


def test_never_trains_on_the_eval_split(teacher):
    model, tokenizer = teacher
    spy = mock.Mock(wraps=tokenizer)
    held_out = [Example("snow storm eval only", "not-a-label"), Example("oven eval only", "also-unknown")]
    ctx = _ctx(model, spy, eval=held_out)
    KnowledgeDistillation().apply(model, ctx, _params(max_steps=2))  # unknown eval labels do not matter
    tokenized = {text for call in spy.call_args_list for text in call.args[0]}
    assert not tokenized & {e.text for e in held_out}
    with pytest.raises(TechniqueError, match="not-a-label"):  # the same labels in train are refused
        kd_finetune(keep_layers(model, [0]), _ctx(model, tokenizer, train=held_out), steps=1)


class _Bf16Context(Context):
    """What a CUDA run does (bf16 autocast through accelerate), on the CPU."""

    def accelerator(self, **kwargs):
        return super().accelerator(**{**kwargs, "mixed_precision": "bf16"})


def test_mixed_precision_wrapper_is_removed_after_training(teacher):
    model, tokenizer = teacher
    ctx = _Bf16Context(
        task=TASK,
        device="cpu",
        seed=0,
        tokenizer=tokenizer,
        teacher=model,
        train=_examples(),
        eval=[],
        labels=[],
    )
    # accelerate's process-wide state was set up without mixed precision by the tests before: rebuilt
    student = kd_finetune(keep_layers(model, [0]), ctx, steps=1, batch_size=8, gradient_accumulation_steps=2)
    assert "forward" not in vars(student) and "_original_forward" not in vars(student)
    batch = tokenizer(["rain cloud wind"], return_tensors="pt")
    with torch.inference_mode():
        # transformers' own forward decorators survive (accelerate's unwrap_model would strip them)
        assert isinstance(student(**batch, return_dict=False), tuple)
        assert student(**batch).logits.dtype == torch.float32
