"""The request form's English labels, help texts and choices, marked for translation.

PocRequestForm (planner/forms.py), the task kinds' demo labels (planner/task_kinds.py) and the pipeline
step fields (planner/pipeline_fields.py) keep their strings in English; ``views.localise_form`` translates
them when the form is rendered. They are listed here so that ``makemessages`` finds them.
"""

from django.utils.translation import gettext_noop

REQUEST_FORM_STRINGS = (
    gettext_noop("Model"),
    gettext_noop("The model to compress, as it is served today."),
    gettext_noop("Task data"),
    gettext_noop("Demo: Wikipedia lead paragraphs by topic (11 labels)"),
    # xgettext reads a flag comment only on the line right above the string itself.
    gettext_noop(
        # xgettext:no-python-format
        "20% of it, chosen by a fixed hash, is held out to measure accuracy or perplexity and never trained on."
    ),
    gettext_noop("Data file"),
    gettext_noop("Candidates to try"),
    gettext_noop("Each pipeline becomes one candidate, measured against the baseline on the same device."),
    gettext_noop("More pipelines"),
    gettext_noop(
        "One per line, steps joined by → (or >), each with its own parameters if you like: "
        "prune.ffn(amount=0.3) → quantize.dynamic-int8. The last step may be one quantize step or one "
        "runtime step, never both (a runtime has its own int8 options)."
    ),
    gettext_noop("as above"),  # a pipeline step's yes/no parameter left to the technique's value
    gettext_noop("p95 latency target (ms)"),
    gettext_noop("Target utilisation (0–1)"),
    gettext_noop("A candidate must keep at least this share of the baseline's accuracy."),
    gettext_noop("Peak traffic ÷ average traffic."),
    gettext_noop("How busy a replica may run at peak; headroom for bursts."),
    gettext_noop("Hours to take a compressed model to production."),
    gettext_noop("Demo: MiniLM-L6 fine-tuned on Wikipedia topics"),
    gettext_noop("Team"),
    gettext_noop("The members of this team see the request."),
    # The task and what follows from it
    gettext_noop("Task"),
    gettext_noop("What the model does: label a text, or write one. The targets and the candidates follow."),
    gettext_noop("Demo: SmolLM2-135M-Instruct, a small chat model"),
    gettext_noop("Demo: Wikipedia lead paragraphs, as text"),
    gettext_noop("Upload a file"),
    gettext_noop(
        "Classification: CSV or JSONL with a 'text' column and a 'label' column. Text generation: a .txt "
        "file with one text per line, JSONL with 'text' or 'prompt' (and an optional 'reference' "
        "completion), or CSV with a 'text' column. UTF-8."
    ),
    gettext_noop("Per-token latency target, p95 (ms)"),
    # xgettext:no-python-format
    gettext_noop("Accuracy floor (% of baseline)"),
    gettext_noop("Max perplexity rise over the baseline (%)"),
    gettext_noop("Output tokens per request"),
    gettext_noop(
        "Classification: the p95 time of one request. Text generation: the p95 time to the first token (TTFT)."
    ),
    gettext_noop(
        "Text generation: the p95 time between two generated tokens (inter-token latency) that readers accept."
    ),
    gettext_noop(
        "A candidate's perplexity on the held-out text may be at most this much higher than the baseline's."
    ),
    gettext_noop("The length of a typical reply; it sets the request time and the cost per token."),
    # Where the model comes from (planner/model_sources.py)
    gettext_noop("Model source"),
    gettext_noop("Model archive"),
    gettext_noop(
        "A .zip or .tar of a folder saved with save_pretrained(): safetensors, config and tokenizer."
    ),
    gettext_noop("Hub model id"),
    gettext_noop("Hub commit (40 hex digits)"),
    # How it is served and kept in production
    gettext_noop("Served today with"),
    gettext_noop("Engineering hours a month to keep a compressed model in production."),
    gettext_noop("How often the current model is updated; each update means producing the candidate again."),
    gettext_noop("Re-run the PoC"),
    gettext_noop("The PoC also runs again when the model's files change."),
    # What to try: the listed pipelines, or a search
    gettext_noop("What to try"),
    gettext_noop(
        "A search tries student sizes, distillation epochs, pruning amounts, quantizers and runtimes "
        "itself, cheapest first by the estimate, and stops when nothing left can beat the best."
    ),
    gettext_noop("Search budget: at most this many candidates"),
    gettext_noop("Each trial is a full candidate: produced, then measured like any other."),
    gettext_noop("Search budget: at most this many minutes"),
    gettext_noop("The search stops starting new trials after this long."),
)
