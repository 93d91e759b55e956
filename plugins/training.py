"""Shared training helpers: a knowledge-distillation fine-tune loop and layer surgery on transformer stacks.

``kd_finetune`` trains a student against ``ctx.teacher`` on ``ctx.train`` (never ``ctx.eval``): soft targets
(Hinton et al. 2015), the hard labels when there are any, and optionally the teacher's hidden states
(TinyBERT, Jiao et al. 2020; MiniLM, Wang et al. 2020). For a causal LM the soft targets are the teacher's
next-token distributions at every token, and the hard loss is next-token prediction on the text itself.
``transformer_layers``/``keep_layers`` find and cut the stack of transformer blocks, so that distillation and
structured pruning share one implementation; ``encode_causal_lm`` pads causal-LM batches for both.

Heavy imports (torch, transformers, accelerate) happen inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from plugins.base import Context, TechniqueError

#: Where transformer blocks live, relative to ``model.base_model`` (then to ``model``): BERT/RoBERTa/ELECTRA,
#: DistilBERT, Llama-style decoders (base model, then the causal-LM wrapper), GPT-2, BART-style decoders.
LAYER_PATHS = ("encoder.layer", "transformer.layer", "layers", "model.layers", "h", "transformer.h")
#: Config attributes that may hold the number of blocks (aliases map onto each other in transformers).
LAYER_COUNT_ATTRS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers")
#: Floats in one micro-batch's logits (rows × tokens × vocabulary) during causal-LM distillation: 256 MB
#: in fp32. The loss holds a few tensors of that size at once, so larger batches are split into gradient
#: accumulation steps (SmolLM2's 49k-token vocabulary at 128 tokens: 10 texts per micro-batch).
LM_LOGITS_BUDGET = 2**26


def pad_token_id(tokenizer: Any) -> int:
    """The id that pads a causal-LM batch: the pad token's, else the end-of-sequence token's (Llama
    tokenizers often have no pad token), else 0. Padding is masked out, so any id serves."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, list | tuple):
            value = value[0] if value else None
        if isinstance(value, int) and value >= 0:
            return value
    return 0


def encode_causal_lm(
    tokenizer: Any, texts: Sequence[str], *, max_length: int, device: Any, padding_side: str = "right"
) -> dict[str, Any]:
    """``input_ids`` and ``attention_mask`` of ``texts`` for a causal LM, truncated to ``max_length`` and
    padded with ``pad_token_id(tokenizer)``: on the right for training and scoring, on the left for
    generation (so that every row's next token follows its last real one).

    The padding is done here rather than by the tokenizer, so a tokenizer without a pad token works and is
    never changed (setting one would change what ``save_pretrained`` writes). A text that gives no token at
    all reads as the pad token, so that every row attends to something.
    """
    import torch

    if tokenizer is None:
        raise TechniqueError("This technique needs the model's tokenizer")
    rows = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad = pad_token_id(tokenizer)
    rows = [list(row) or [pad] for row in rows]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        start = width - len(row) if padding_side == "left" else 0
        input_ids[i, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, start : start + len(row)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def next_token_labels(inputs: Mapping[str, Any]) -> Any:
    """The targets of next-token prediction for a batch from ``encode_causal_lm``: position ``i`` predicts
    token ``i + 1``, so the labels are the input ids shifted left by one, with -100 at padding (and after
    each text's last token). Compare with ``logits[:, :-1]``."""
    input_ids, mask = inputs["input_ids"], inputs["attention_mask"]
    return input_ids.masked_fill(mask == 0, -100)[:, 1:]


def next_token_loss(logits: Any, labels: Any) -> Any | None:
    """Mean cross-entropy of ``logits[:, :-1]`` against ``next_token_labels``; None when the batch has no
    target (every text one token long)."""
    import torch.nn.functional as F

    if not bool((labels != -100).any()):
        return None
    vocabulary = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, vocabulary).float(), labels.reshape(-1), ignore_index=-100
    )


def transformer_layers(model: Any) -> tuple[Any, str]:
    """The module holding the ``ModuleList`` of transformer blocks and that attribute's name.

    Knows ``encoder.layer`` (BERT, RoBERTa), ``transformer.layer`` (DistilBERT), ``layers`` /
    ``model.layers`` (Llama and other decoders) and ``h`` (GPT-2); looks under ``model.base_model`` first.
    """
    import torch

    roots = [getattr(model, "base_model", None), model]
    for root in roots:
        if root is None:
            continue
        for path in LAYER_PATHS:
            *parents, attr = path.split(".")
            parent = root
            for name in parents:
                parent = getattr(parent, name, None)
                if parent is None:
                    break
            if parent is None:
                continue
            layers = getattr(parent, attr, None)
            if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
                return parent, attr
    raise TechniqueError(
        f"Cannot find the transformer blocks of {type(model).__name__}: expected a ModuleList at one of "
        f"{', '.join(LAYER_PATHS)}"
    )


def layer_count(model: Any) -> int:
    parent, attr = transformer_layers(model)
    return len(getattr(parent, attr))


def evenly_spaced(count: int, total: int) -> list[int]:
    """``count`` of ``total`` layer indices, first and last included when count > 1: for 6 of 12 this gives
    0, 2, 4, 7, 9, 11, the layers DistilBERT's extraction script keeps."""
    if count <= 1:
        return [0]
    return [int(i * (total - 1) / (count - 1) + 0.5) for i in range(count)]


def keep_layers(model: Any, indices: Sequence[int], *, inplace: bool = False) -> Any:
    """The model with only the transformer blocks at ``indices`` (0-based, in order), the others removed.

    The config's layer count (and ``layer_types`` where a config has it) is updated and each kept block's
    ``layer_idx`` renumbered, so ``save_pretrained``/``from_pretrained`` round-trip with no custom format.
    By default the input stays intact and a copy is returned; the dropped blocks are never copied.
    ``inplace=True`` cuts the given model instead (less memory when the caller owns it).
    """
    import torch

    parent, attr = transformer_layers(model)
    layers = getattr(parent, attr)
    total = len(layers)
    kept = [int(i) for i in indices]
    if not kept:
        raise TechniqueError("Keep at least one transformer layer")
    bad = [i for i in kept if not 0 <= i < total]
    if bad:
        raise TechniqueError(
            f"Layer indices {', '.join(map(str, bad))} do not exist: the model has {total} layers, "
            f"numbered 0 to {total - 1}"
        )
    if len(set(kept)) != len(kept):
        raise TechniqueError(f"Layer indices repeat: {', '.join(map(str, kept))}; list each layer once")
    kept = sorted(kept)

    if not inplace:
        # Pre-seeding the memo makes deepcopy skip the dropped blocks (they become None in the copy's list,
        # which is replaced right below): copying a 12-layer teacher to keep 2 copies 2 layers.
        memo: dict[int, Any] = {id(layer): None for i, layer in enumerate(layers) if i not in kept}
        model = copy.deepcopy(model, memo)
        parent, attr = transformer_layers(model)
        layers = getattr(parent, attr)
    setattr(parent, attr, torch.nn.ModuleList([layers[i] for i in kept]))

    for new_index, layer in enumerate(getattr(parent, attr)):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    candidates = (getattr(model, "config", None), getattr(parent, "config", None))
    configs = {id(c): c for c in candidates if c is not None}
    for config in configs.values():
        for name in LAYER_COUNT_ATTRS:
            if getattr(config, name, None) == total:
                setattr(config, name, len(kept))
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, list | tuple) and len(layer_types) == total:
            config.layer_types = [layer_types[i] for i in kept]
    return model


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


def same_tokens(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two encodings of the same texts hold the same tokens in the same places."""
    import torch

    ids_a, ids_b = a["input_ids"], b["input_ids"].to(a["input_ids"].device)
    mask_a, mask_b = a["attention_mask"], b["attention_mask"].to(a["attention_mask"].device)
    return (
        ids_a.shape == ids_b.shape
        and torch.equal(mask_a, mask_b)
        and torch.equal(ids_a.masked_fill(mask_a == 0, 0), ids_b.masked_fill(mask_b == 0, 0))
    )


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
    import torch.nn.functional as F
    from transformers import get_linear_schedule_with_warmup

    started = time.perf_counter()
    report = report or ctx.report
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
    label2id = {str(k): int(v) for k, v in (getattr(student.config, "label2id", None) or {}).items()}
    targets: list[int] = []
    unknown: set[str] = set()
    if causal:  # the text is its own target; an empty one teaches nothing
        examples = [e for e in examples if e.text.strip()]
        if not examples:
            raise TechniqueError("Every training text is empty; give texts to distill on")
    for example in [] if causal else examples:
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

    use_hidden = hidden_weight > 0
    if use_hidden:
        student_size = getattr(student.config, "hidden_size", None)
        teacher_size = getattr(teacher.config, "hidden_size", None)
        if student_size != teacher_size:
            raise TechniqueError(
                f"The hidden-state loss compares hidden states of equal width; the student's are "
                f"{student_size} wide and the teacher's {teacher_size}. Set hidden_weight to 0."
            )
        student_layers, teacher_layers = layer_count(student), layer_count(teacher)
        layer_map = (
            list(layer_map) if layer_map is not None else _default_layer_map(student_layers, teacher_layers)
        )
        if len(layer_map) != student_layers + 1 or not all(0 <= j <= teacher_layers for j in layer_map):
            raise TechniqueError(
                f"layer_map needs {student_layers + 1} teacher hidden-state indices (0 = embeddings, "
                f"up to {teacher_layers}), got {layer_map}"
            )

    limits = [
        getattr(m.config, "max_position_embeddings", None) for m in (student, teacher) if hasattr(m, "config")
    ]
    max_length = min([max_length or ctx.max_length] + [n for n in limits if isinstance(n, int) and n > 0])

    batch_size = min(batch_size, len(examples))
    accumulation = min(gradient_accumulation_steps, batch_size)
    if causal:
        head = student.get_output_embeddings() if hasattr(student, "get_output_embeddings") else None
        vocabulary = getattr(head, "out_features", None) or getattr(student.config, "vocab_size", 1)
        rows = max(1, LM_LOGITS_BUDGET // (max_length * int(vocabulary)))
        accumulation = max(accumulation, math.ceil(batch_size / rows))
    micro_batch = math.ceil(batch_size / accumulation)
    per_epoch = math.ceil(len(examples) / batch_size)
    total = max(1, math.ceil(round(epochs * per_epoch, 6))) if epochs > 0 else int(steps or 1)
    if steps:
        total = min(total, int(steps))

    torch.manual_seed(ctx.seed)
    rng = random.Random(ctx.seed)
    mixed = "bf16" if ctx.device.startswith("cuda") and torch.cuda.is_bf16_supported() else "no"
    accelerator = _accelerator(ctx, gradient_accumulation_steps=accumulation, mixed_precision=mixed)
    device = accelerator.device
    student.to(device)
    student.train()
    teacher.eval()
    try:
        teacher_device = next(teacher.parameters()).device
    except StopIteration:
        teacher_device = torch.device("cpu")

    decay = [p for p in student.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in student.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(warmup_ratio * total), num_training_steps=total
    )
    own_forward = student.__dict__.get("forward")  # normally None: the class's forward is used
    model, optimizer, scheduler = accelerator.prepare(student, optimizer, scheduler)

    texts = [e.text for e in examples]
    same_tokenizer = ctx.teacher_tokenizer is ctx.tokenizer
    # No key-value cache while training: nothing reuses it, and it costs memory.
    forward_kwargs: dict[str, Any] = {"use_cache": False} if causal else {}

    def encode(tokenizer: Any, batch_texts: list[str], on: Any) -> dict[str, Any]:
        if causal:
            return encode_causal_lm(tokenizer, batch_texts, max_length=max_length, device=on)
        encoded = tokenizer(
            batch_texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return {k: v.to(on) for k, v in encoded.items()}

    # The teacher is frozen and in eval mode, so its logits per example never change: a classifier's are
    # computed once. A causal LM's (tokens × vocabulary per text) are too big to keep: computed per batch.
    cache_logits = not (use_hidden or causal)
    teacher_logits: dict[int, Any] = {}

    def teacher_outputs(batch: list[int], student_inputs: dict[str, Any]) -> tuple[Any, Any]:
        missing = [i for i in batch if i not in teacher_logits] if cache_logits else batch
        hidden = None
        if missing:
            if same_tokenizer and missing == batch:
                inputs = {k: v.to(teacher_device) for k, v in student_inputs.items()}
            else:
                inputs = encode(ctx.teacher_tokenizer, [texts[i] for i in missing], teacher_device)
                if causal and not same_tokens(inputs, student_inputs):
                    raise TechniqueError(
                        "Distilling a causal LM compares the next-token predictions at every token, so the "
                        "student and the teacher must split the texts into the same tokens, and their "
                        "tokenizers differ; put vocabulary changes after distillation"
                    )
            with torch.inference_mode(), accelerator.autocast():
                out = teacher(**inputs, output_hidden_states=use_hidden, **forward_kwargs)
            # Clones outside inference mode: inference tensors cannot be saved for the student's backward.
            logits = out.logits.float().to(device).clone()
            if use_hidden:
                hidden = [h.float().to(device).clone() for h in out.hidden_states]
            if not cache_logits:
                return logits, hidden
            for row, i in enumerate(missing):
                teacher_logits[i] = logits[row]
        return torch.stack([teacher_logits[i] for i in batch]), hidden

    def batch_loss(batch: list[int]) -> Any:
        inputs = encode(ctx.tokenizer, [texts[i] for i in batch], device)
        t_logits, t_hidden = teacher_outputs(batch, inputs)
        out = model(**inputs, output_hidden_states=use_hidden, **forward_kwargs)
        s_logits = out.logits.float()
        if s_logits.shape != t_logits.shape:
            what = "tokens in its vocabulary" if causal else "classes"
            same = "the same vocabulary" if causal else "the same label set"
            raise TechniqueError(
                f"The student predicts {s_logits.shape[-1]} {what} and the teacher {t_logits.shape[-1]}; "
                f"distillation needs {same}"
            )
        if causal:
            return causal_loss(inputs, s_logits, t_logits, out, t_hidden)
        kd = F.kl_div(
            F.log_softmax(s_logits / temperature, dim=-1),
            F.log_softmax(t_logits / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        ) * (temperature**2)
        if any(targets[i] >= 0 for i in batch):
            labels = torch.tensor([targets[i] for i in batch], device=device)
            loss = alpha * kd + (1.0 - alpha) * F.cross_entropy(s_logits, labels, ignore_index=-100)
        else:
            loss = kd
        if use_hidden:
            loss = loss + hidden_weight * hidden_loss(
                out.hidden_states, t_hidden, inputs.get("attention_mask")
            )
        return loss

    def causal_loss(inputs: dict[str, Any], s_logits: Any, t_logits: Any, out: Any, t_hidden: Any) -> Any:
        # KL at every non-padding position; "batchmean" over the (tokens, vocabulary) rows is per token.
        mask = inputs["attention_mask"].bool()
        kd = F.kl_div(
            F.log_softmax(s_logits[mask] / temperature, dim=-1),
            F.log_softmax(t_logits[mask] / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        ) * (temperature**2)
        loss = kd
        if alpha < 1.0:
            hard = next_token_loss(s_logits, next_token_labels(inputs))
            if hard is not None:
                loss = alpha * kd + (1.0 - alpha) * hard
        if use_hidden:
            loss = loss + hidden_weight * hidden_loss(out.hidden_states, t_hidden, inputs["attention_mask"])
        return loss

    def hidden_loss(s_hidden: Sequence[Any], t_hidden: Sequence[Any], mask: Any) -> Any:
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
            else torch.ones(*s_hidden[0].shape[:2], 1, device=device)
        )
        denominator = weights.sum() * s_hidden[0].shape[-1]
        terms = [
            (((s_hidden[i].float() - t_hidden[j]) ** 2) * weights).sum() / denominator
            for i, j in enumerate(layer_map)
        ]
        return torch.stack(terms).mean()

    report(0.0, f"distilling: {total} steps of {batch_size} examples")
    every = max(1, round(total / 20))
    stream = _index_stream(len(examples), micro_batch, rng)
    window: list[Any] = []
    first_loss = final_loss = float("nan")
    for step in range(1, total + 1):
        step_loss = 0.0
        for _ in range(accumulation):
            batch = next(stream)
            with accelerator.accumulate(model):
                loss = batch_loss(batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            step_loss = step_loss + loss.detach() / accumulation
        window.append(step_loss)
        if step == 1:
            first_loss = float(step_loss)
        if step % every == 0 or step == total:
            final_loss = float(torch.stack(window).mean())
            window = []
            report(step / total, f"step {step}/{total}, loss {final_loss:.3f}")

    # Undo accelerate's autocast wrapper by hand: unwrap_model(keep_fp32_wrapper=False) follows every
    # ``__wrapped__`` down to the bare function, which also strips transformers' own decorators of
    # ``forward`` (``can_return_tuple``, output capturing), leaving a model that misbehaves afterwards.
    student = accelerator.unwrap_model(model)
    student.__dict__.pop("_original_forward", None)
    if own_forward is None:
        student.__dict__.pop("forward", None)
    else:
        student.forward = own_forward
    accelerator.free_memory()
    student.eval()
    if stats is not None:
        stats.update(
            steps=total,
            first_loss=first_loss,
            final_loss=final_loss,
            seconds=time.perf_counter() - started,
            examples=len(examples),
            batch_size=batch_size,
        )
    return student
