"""The knowledge-distillation fine-tune loop that distillation and the recovery of pruned models share.

``kd_finetune`` trains a student against ``ctx.teacher`` on ``ctx.train`` (never ``ctx.eval``): soft targets
(Hinton et al. 2015), the hard labels when there are any, and optionally the teacher's hidden states
(TinyBERT, Jiao et al. 2020; MiniLM, Wang et al. 2020). For a causal LM the soft targets are the teacher's
next-token distributions at every token, and the hard loss is next-token prediction on the text itself.
It is split into checking the settings (``_plan``), the optimizer, and the loop (``_Distillation``: the
teacher's outputs, the loss of a micro-batch, one optimizer step). Causal-LM batches come from
``plugins.causal_lm`` (whose helpers are importable from here too); the layer surgery that students are made
with is in ``plugins.layers``.

Heavy imports (torch, transformers, accelerate) happen inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from plugins.base import Context, Example, TechniqueError
from plugins.causal_lm import encode_causal_lm, next_token_labels, next_token_loss, same_tokens
from plugins.layers import layer_count

__all__ = [
    "LM_LOGITS_BUDGET",
    "encode_causal_lm",
    "kd_finetune",
    "next_token_labels",
    "next_token_loss",
    "same_tokens",
]

#: Floats in one micro-batch's logits (rows × tokens × vocabulary) during causal-LM distillation: 256 MB
#: in fp32. The loss holds a few tensors of that size at once, so larger batches are split into gradient
#: accumulation steps (SmolLM2's 49k-token vocabulary at 128 tokens: 10 texts per micro-batch).
LM_LOGITS_BUDGET = 2**26


def _accelerator(ctx: Context, **kwargs: Any) -> Any:
    """``ctx.accelerator(**kwargs)``, tolerating accelerate's process-wide state.

    accelerate keeps one ``AcceleratorState`` per process: once a CPU run set it up, a later CUDA run in the
    same worker process would silently stay on the CPU, and a different ``mixed_precision`` raises. Either
    way the state is reset and the accelerator built again for this run's device.
    """
    import torch
    from accelerate.state import AcceleratorState

    try:
        accelerator = ctx.accelerator(**kwargs)
    except ValueError as exc:
        if "already been initialized" not in str(exc):
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = ctx.accelerator(**kwargs)
    if accelerator.device.type != torch.device(ctx.device).type:
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = ctx.accelerator(**kwargs)
    return accelerator


def _refuse_untrainable(student: Any, ctx: Context) -> None:
    if student is ctx.teacher:
        raise TechniqueError("The student must be a copy of the teacher, not the teacher itself")
    quantized = [name for name, module in student.named_modules() if ".quantized" in type(module).__module__]
    if quantized:
        raise TechniqueError(
            "This model has quantized layers, which cannot be trained: put distillation or recovery "
            "fine-tuning before quantization in the pipeline"
        )
    if not any(p.requires_grad for p in student.parameters()):
        raise TechniqueError("The student has no trainable parameters")


def _default_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Uniform mapping g(m) = m·N/M of TinyBERT: student hidden state m (0 = embeddings) learns teacher
    hidden state g(m); the last student layer always learns the teacher's last layer."""
    return [round(m * teacher_layers / student_layers) for m in range(student_layers + 1)]


def _index_stream(count: int, size: int, rng: random.Random) -> Iterator[list[int]]:
    """Batches of ``size`` example indices, reshuffled every pass over the data, without end."""
    order: list[int] = []
    while True:
        batch: list[int] = []
        while len(batch) < size:
            if not order:
                order = list(range(count))
                rng.shuffle(order)
            take = size - len(batch)
            batch += order[:take]
            order = order[take:]
        yield batch


def kd_finetune(
    student: Any,
    ctx: Context,
    *,
    steps: int | None = None,
    epochs: float = 1.0,
    learning_rate: float = 5e-5,
    batch_size: int = 32,
    max_length: int | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    hidden_weight: float = 0.0,
    layer_map: Sequence[int] | None = None,
    report: Callable[[float, str], None] | None = None,
    gradient_accumulation_steps: int = 1,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    stats: dict[str, Any] | None = None,
) -> Any:
    """Fine-tune ``student`` to imitate ``ctx.teacher`` on ``ctx.train``; return it in eval mode.

    Loss per batch: ``alpha·T²·KL(p_teacher ‖ p_student)`` on the temperature-``T`` softmaxes (Hinton et al.
    2015; the usual direction, i.e. cross-entropy against the teacher's soft targets up to a constant) plus
    ``(1 − alpha)·CE(student, label)`` when the batch has labels; examples whose ``label`` is None are
    learnt from the soft targets alone, and a batch without any label uses the soft-target loss with weight
    1. With ``hidden_weight > 0`` it adds ``hidden_weight ×`` the mean squared error between the student's
    hidden state ``i`` and the teacher's hidden state ``layer_map[i]`` (TinyBERT / MiniLM style), where
    index 0 is the embedding output and ``i`` the output of block ``i``; ``layer_map`` has one entry per
    student hidden state (blocks + 1) and defaults to evenly spaced teacher layers. Padding is left out.

    For a causal LM (``ctx.task == "causal-lm"``) the KL term compares the next-token distributions at every
    non-padding position, averaged per token, and the hard loss is ``(1 − alpha)·`` next-token cross-entropy
    on the training text itself, so no labels are needed (``Example.label`` is ignored). Batches are padded
    on the right by ``encode_causal_lm``; the teacher runs on each batch (its logits are too big to keep per
    example), and batches are split into gradient-accumulation steps so that one micro-batch's logits stay
    within ``LM_LOGITS_BUDGET`` floats. Student and teacher must split the text into the same tokens.

    The teacher reads ``ctx.teacher_tokenizer``'s encoding of the texts and the student ``ctx.tokenizer``'s
    (they differ after vocabulary pruning). Optimizer steps: ``epochs × ceil(len(train) / batch_size)``,
    capped at ``steps`` when given; ``batch_size`` examples per optimizer step, split into
    ``gradient_accumulation_steps`` micro-batches. AdamW, linear warmup (``warmup_ratio``) then linear
    decay, gradient norm clipped at 1, bf16 autocast on CUDA. Seeded from ``ctx.seed``. Progress goes to
    ``report`` (default ``ctx.report``) about every 5 % of the steps. ``stats``, when given, receives steps,
    first_loss, final_loss (mean over the last reporting window), seconds, examples and batch_size.
    """
    import torch

    started = time.perf_counter()
    report = report or ctx.report
    plan = _plan(
        student,
        ctx,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        max_length=max_length,
        temperature=temperature,
        alpha=alpha,
        hidden_weight=hidden_weight,
        layer_map=layer_map,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )
    torch.manual_seed(ctx.seed)
    rng = random.Random(ctx.seed)
    mixed = "bf16" if ctx.device.startswith("cuda") and torch.cuda.is_bf16_supported() else "no"
    accelerator = _accelerator(ctx, gradient_accumulation_steps=plan.accumulation, mixed_precision=mixed)
    student.to(accelerator.device)
    student.train()
    ctx.teacher.eval()
    optimizer, scheduler = _optimizer(
        student, plan.total, learning_rate=learning_rate, weight_decay=weight_decay, warmup_ratio=warmup_ratio
    )
    own_forward = student.__dict__.get("forward")  # normally None: the class's forward is used
    model, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)
    run = _Distillation(plan, ctx, accelerator, model, optimizer, scheduler)
    first_loss, final_loss = run.train(rng, report)
    student = _unwrap(accelerator, model, own_forward)
    if stats is not None:
        stats.update(
            steps=plan.total,
            first_loss=first_loss,
            final_loss=final_loss,
            seconds=time.perf_counter() - started,
            examples=len(plan.examples),
            batch_size=plan.batch_size,
        )
    return student


@dataclass
class _Plan:
    """The checked settings of one ``kd_finetune`` run."""

    examples: list[Example]
    #: Classification: the class id of each example, -100 where it has no label. Causal LM: empty.
    targets: list[int]
    causal: bool
    temperature: float
    alpha: float
    hidden_weight: float
    #: The teacher hidden state each student hidden state learns; None without the hidden-state loss.
    layer_map: list[int] | None
    max_length: int
    batch_size: int
    accumulation: int
    micro_batch: int
    total: int

    @property
    def use_hidden(self) -> bool:
        return self.layer_map is not None


def _plan(
    student: Any,
    ctx: Context,
    *,
    steps: int | None,
    epochs: float,
    batch_size: int,
    max_length: int | None,
    temperature: float,
    alpha: float,
    hidden_weight: float,
    layer_map: Sequence[int] | None,
    gradient_accumulation_steps: int,
) -> _Plan:
    """Check the settings against the student, the teacher and the training data, with the reason when
    they cannot work, and work out the batches and the number of optimizer steps."""
    teacher = ctx.teacher
    if teacher is None:
        raise TechniqueError("Distillation needs the original model as the teacher")
    examples = list(ctx.train)  # never ctx.eval: it is held out for measuring
    if not examples:
        raise TechniqueError(
            "There are no training examples to distill on; give task data (labels are optional)"
        )
    if temperature <= 0:
        raise TechniqueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise TechniqueError(f"alpha must be between 0 and 1, got {alpha}")
    if hidden_weight < 0:
        raise TechniqueError(f"hidden_weight must not be negative, got {hidden_weight}")
    if batch_size < 1 or gradient_accumulation_steps < 1:
        raise TechniqueError("batch_size and gradient_accumulation_steps must be at least 1")
    if epochs <= 0 and not steps:
        raise TechniqueError("Give a positive number of epochs or steps")
    _refuse_untrainable(student, ctx)

    causal = ctx.task == "causal-lm"
    examples, targets = _examples_and_targets(student, examples, causal=causal)
    hidden_map = _hidden_layer_map(student, teacher, layer_map) if hidden_weight > 0 else None
    limits = [
        getattr(m.config, "max_position_embeddings", None) for m in (student, teacher) if hasattr(m, "config")
    ]
    max_length = min([max_length or ctx.max_length] + [n for n in limits if isinstance(n, int) and n > 0])

    batch_size = min(batch_size, len(examples))
    accumulation = min(gradient_accumulation_steps, batch_size)
    if causal:
        head = student.get_output_embeddings() if hasattr(student, "get_output_embeddings") else None
        out_features = getattr(head, "out_features", None)
        vocabulary = out_features if out_features else getattr(student.config, "vocab_size", 1)
        rows = max(1, LM_LOGITS_BUDGET // (max_length * int(vocabulary)))
        accumulation = max(accumulation, math.ceil(batch_size / rows))
    per_epoch = math.ceil(len(examples) / batch_size)
    total = max(1, math.ceil(round(epochs * per_epoch, 6))) if epochs > 0 else int(steps or 1)
    if steps:
        total = min(total, int(steps))
    return _Plan(
        examples=examples,
        targets=targets,
        causal=causal,
        temperature=temperature,
        alpha=alpha,
        hidden_weight=hidden_weight,
        layer_map=hidden_map,
        max_length=max_length,
        batch_size=batch_size,
        accumulation=accumulation,
        micro_batch=math.ceil(batch_size / accumulation),
        total=total,
    )


def _examples_and_targets(
    student: Any, examples: list[Example], *, causal: bool
) -> tuple[list[Example], list[int]]:
    """The examples to train on and, for a classifier, their class ids (-100 where unlabeled)."""
    if causal:  # the text is its own target; an empty one teaches nothing
        examples = [e for e in examples if e.text.strip()]
        if not examples:
            raise TechniqueError("Every training text is empty; give texts to distill on")
        return examples, []
    label2id = {str(k): int(v) for k, v in (getattr(student.config, "label2id", None) or {}).items()}
    targets: list[int] = []
    unknown: set[str] = set()
    for example in examples:
        if example.label is None:
            targets.append(-100)
        elif str(example.label) in label2id:
            targets.append(label2id[str(example.label)])
        else:
            unknown.add(str(example.label))
    if unknown:
        known = ", ".join(sorted(label2id)) or "none"
        raise TechniqueError(
            f"The training labels {', '.join(sorted(unknown))} are not labels of the model ({known})"
        )
    return examples, targets


def _hidden_layer_map(student: Any, teacher: Any, layer_map: Sequence[int] | None) -> list[int]:
    """The checked ``layer_map`` of the hidden-state loss (by default evenly spaced teacher layers)."""
    student_size = getattr(student.config, "hidden_size", None)
    teacher_size = getattr(teacher.config, "hidden_size", None)
    if student_size != teacher_size:
        raise TechniqueError(
            f"The hidden-state loss compares hidden states of equal width; the student's are "
            f"{student_size} wide and the teacher's {teacher_size}. Set hidden_weight to 0."
        )
    student_layers, teacher_layers = layer_count(student), layer_count(teacher)
    mapping = list(layer_map) if layer_map is not None else _default_layer_map(student_layers, teacher_layers)
    if len(mapping) != student_layers + 1 or not all(0 <= j <= teacher_layers for j in mapping):
        raise TechniqueError(
            f"layer_map needs {student_layers + 1} teacher hidden-state indices (0 = embeddings, "
            f"up to {teacher_layers}), got {mapping}"
        )
    return mapping


def _optimizer(
    student: Any, total: int, *, learning_rate: float, weight_decay: float, warmup_ratio: float
) -> tuple[Any, Any]:
    """AdamW (no weight decay on biases and norms) and a linear warmup-then-decay schedule over ``total``."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    decay = [p for p in student.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in student.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(warmup_ratio * total), num_training_steps=total
    )
    return optimizer, scheduler


class _Distillation:
    """The training loop of one ``kd_finetune`` run: the teacher's outputs, the loss of a micro-batch and
    the optimizer steps, for the model, optimizer and scheduler that accelerate prepared."""

    def __init__(
        self, plan: _Plan, ctx: Context, accelerator: Any, model: Any, optimizer: Any, scheduler: Any
    ) -> None:
        import torch

        self.plan, self.ctx, self.accelerator = plan, ctx, accelerator
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.device = accelerator.device
        try:
            self.teacher_device = next(ctx.teacher.parameters()).device
        except StopIteration:
            self.teacher_device = torch.device("cpu")
        self.texts = [e.text for e in plan.examples]
        self.same_tokenizer = ctx.teacher_tokenizer is ctx.tokenizer
        # No key-value cache while training: nothing reuses it, and it costs memory.
        self.forward_kwargs: dict[str, Any] = {"use_cache": False} if plan.causal else {}
        # The teacher is frozen and in eval mode, so its logits per example never change: a classifier's
        # are computed once. A causal LM's (tokens × vocabulary per text) are too big to keep: per batch.
        self.cache_logits = not (plan.use_hidden or plan.causal)
        self.teacher_logits: dict[int, Any] = {}

    def train(self, rng: random.Random, report: Callable[[float, str], None]) -> tuple[float, float]:
        """All the optimizer steps; (the first step's loss, the mean loss over the last reporting window)."""
        import torch

        total = self.plan.total
        report(0.0, f"distilling: {total} steps of {self.plan.batch_size} examples")
        every = max(1, round(total / 20))
        stream = _index_stream(len(self.plan.examples), self.plan.micro_batch, rng)
        window: list[Any] = []
        first_loss = final_loss = float("nan")
        for step in range(1, total + 1):
            step_loss = self.step(stream)
            window.append(step_loss)
            if step == 1:
                first_loss = float(step_loss)
            if step % every == 0 or step == total:
                final_loss = float(torch.stack(window).mean())
                window = []
                report(step / total, f"step {step}/{total}, loss {final_loss:.3f}")
        return first_loss, final_loss

    def step(self, stream: Iterator[list[int]]) -> Any:
        """One optimizer step over ``accumulation`` micro-batches; the step's mean loss (a tensor)."""
        accelerator, accumulation = self.accelerator, self.plan.accumulation
        step_loss: Any = 0.0
        for _ in range(accumulation):
            batch = next(stream)
            with accelerator.accumulate(self.model):
                loss = self.loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
            step_loss = step_loss + loss.detach() / accumulation
        return step_loss

    def encode(self, tokenizer: Any, batch_texts: list[str], on: Any) -> dict[str, Any]:
        max_length = self.plan.max_length
        if self.plan.causal:
            return encode_causal_lm(tokenizer, batch_texts, max_length=max_length, device=on)
        encoded = tokenizer(
            batch_texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return {k: v.to(on) for k, v in encoded.items()}

    def teacher_outputs(self, batch: list[int], student_inputs: dict[str, Any]) -> tuple[Any, Any]:
        """The teacher's logits for the batch (cached per example for a classifier) and, with the
        hidden-state loss, its hidden states."""
        import torch

        plan, cache = self.plan, self.teacher_logits
        missing = [i for i in batch if i not in cache] if self.cache_logits else batch
        hidden = None
        if missing:
            if self.same_tokenizer and missing == batch:
                inputs = {k: v.to(self.teacher_device) for k, v in student_inputs.items()}
            else:
                texts = [self.texts[i] for i in missing]
                inputs = self.encode(self.ctx.teacher_tokenizer, texts, self.teacher_device)
                if plan.causal and not same_tokens(inputs, student_inputs):
                    raise TechniqueError(
                        "Distilling a causal LM compares the next-token predictions at every token, so the "
                        "student and the teacher must split the texts into the same tokens, and their "
                        "tokenizers differ; put vocabulary changes after distillation"
                    )
            with torch.inference_mode(), self.accelerator.autocast():
                out = self.ctx.teacher(**inputs, output_hidden_states=plan.use_hidden, **self.forward_kwargs)
            # Clones outside inference mode: inference tensors cannot be saved for the student's backward.
            logits = out.logits.float().to(self.device).clone()
            if plan.use_hidden:
                hidden = [h.float().to(self.device).clone() for h in out.hidden_states]
            if not self.cache_logits:
                return logits, hidden
            for row, i in enumerate(missing):
                cache[i] = logits[row]
        return torch.stack([cache[i] for i in batch]), hidden

    def loss(self, batch: list[int]) -> Any:
        """The loss of one micro-batch of example indices."""
        import torch
        import torch.nn.functional as F

        plan = self.plan
        inputs = self.encode(self.ctx.tokenizer, [self.texts[i] for i in batch], self.device)
        t_logits, t_hidden = self.teacher_outputs(batch, inputs)
        out = self.model(**inputs, output_hidden_states=plan.use_hidden, **self.forward_kwargs)
        s_logits = out.logits.float()
        if s_logits.shape != t_logits.shape:
            what = "tokens in its vocabulary" if plan.causal else "classes"
            same = "the same vocabulary" if plan.causal else "the same label set"
            raise TechniqueError(
                f"The student predicts {s_logits.shape[-1]} {what} and the teacher {t_logits.shape[-1]}; "
                f"distillation needs {same}"
            )
        if plan.causal:
            return self.causal_loss(inputs, s_logits, t_logits, out, t_hidden)
        temperature, alpha = plan.temperature, plan.alpha
        kd = F.kl_div(
            F.log_softmax(s_logits / temperature, dim=-1),
            F.log_softmax(t_logits / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        ) * (temperature**2)
        if any(plan.targets[i] >= 0 for i in batch):
            labels = torch.tensor([plan.targets[i] for i in batch], device=self.device)
            loss = alpha * kd + (1.0 - alpha) * F.cross_entropy(s_logits, labels, ignore_index=-100)
        else:
            loss = kd
        if plan.use_hidden:
            loss = loss + plan.hidden_weight * self.hidden_loss(
                out.hidden_states, t_hidden, inputs.get("attention_mask")
            )
        return loss

    def causal_loss(
        self, inputs: dict[str, Any], s_logits: Any, t_logits: Any, out: Any, t_hidden: Any
    ) -> Any:
        """KL at every non-padding position; "batchmean" over the (tokens, vocabulary) rows is per token."""
        import torch.nn.functional as F

        plan, temperature = self.plan, self.plan.temperature
        mask = inputs["attention_mask"].bool()
        kd = F.kl_div(
            F.log_softmax(s_logits[mask] / temperature, dim=-1),
            F.log_softmax(t_logits[mask] / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        ) * (temperature**2)
        loss = kd
        if plan.alpha < 1.0:
            hard = next_token_loss(s_logits, next_token_labels(inputs))
            if hard is not None:
                loss = plan.alpha * kd + (1.0 - plan.alpha) * hard
        if plan.use_hidden:
            loss = loss + plan.hidden_weight * self.hidden_loss(
                out.hidden_states, t_hidden, inputs["attention_mask"]
            )
        return loss

    def hidden_loss(self, s_hidden: Sequence[Any], t_hidden: Sequence[Any], mask: Any) -> Any:
        """Mean over the mapped layers of the squared error per hidden feature, padding left out."""
        import torch

        layer_map = self.plan.layer_map
        assert layer_map is not None
        if len(s_hidden) != len(layer_map):
            raise TechniqueError(
                f"The student returned {len(s_hidden)} hidden states, expected {len(layer_map)}"
            )
        if s_hidden[0].shape != t_hidden[0].shape:
            raise TechniqueError(
                "The hidden-state loss needs the teacher and the student to split texts into the same "
                "tokens, and their tokenizers differ; set hidden_weight to 0"
            )
        weights = (
            mask.unsqueeze(-1).float()
            if mask is not None
            else torch.ones(*s_hidden[0].shape[:2], 1, device=self.device)
        )
        denominator = weights.sum() * s_hidden[0].shape[-1]
        terms = [
            (((s_hidden[i].float() - t_hidden[j]) ** 2) * weights).sum() / denominator
            for i, j in enumerate(layer_map)
        ]
        return torch.stack(terms).mean()


def _unwrap(accelerator: Any, model: Any, own_forward: Any) -> Any:
    """The trained student, in eval mode, without accelerate's wrappers.

    Undoes accelerate's autocast wrapper by hand: unwrap_model(keep_fp32_wrapper=False) follows every
    ``__wrapped__`` down to the bare function, which also strips transformers' own decorators of
    ``forward`` (``can_return_tuple``, output capturing), leaving a model that misbehaves afterwards.
    """
    student = accelerator.unwrap_model(model)
    student.__dict__.pop("_original_forward", None)
    if own_forward is None:
        student.__dict__.pop("forward", None)
    else:
        student.forward = own_forward
    accelerator.free_memory()
    student.eval()
    return student
