"""The request form's English labels, help texts and choices (planner/forms.py), marked for translation.

planner/forms.py marks none of its strings, so they are listed here for ``makemessages`` and
``views.localise_form`` translates a form's strings with them when it is rendered. Once forms.py wraps
its strings in ``gettext_lazy`` this module and that function can go.
"""

from django.utils.translation import gettext_noop

REQUEST_FORM_STRINGS = (
    gettext_noop("Model"),
    gettext_noop("The model to compress, as it is served today."),
    gettext_noop("Task data"),
    gettext_noop("Demo: Wikipedia lead paragraphs by topic (11 labels)"),
    gettext_noop("Upload a CSV or JSONL file"),
    # xgettext:no-python-format
    gettext_noop(
        "20% of it, chosen by a fixed hash, is held out to measure accuracy or perplexity and never trained on."
    ),
    gettext_noop("Data file"),
    gettext_noop("CSV or JSONL with a 'text' column and a 'label' column (UTF-8)."),
    gettext_noop("Candidates to try"),
    gettext_noop("Each pipeline becomes one candidate, measured against the baseline on the same device."),
    gettext_noop("More pipelines"),
    gettext_noop("One per line, steps joined by → (or >). A quantizer must be the last step."),
    gettext_noop("p95 latency target (ms)"),
    gettext_noop("Target utilisation (0–1)"),
    gettext_noop("A candidate must keep at least this share of the baseline's accuracy."),
    gettext_noop("Peak traffic ÷ average traffic."),
    gettext_noop("How busy a replica may run at peak; headroom for bursts."),
    gettext_noop("Hours to take a compressed model to production."),
    gettext_noop("Demo: MiniLM-L6 fine-tuned on Wikipedia topics"),
    gettext_noop("Team"),
    gettext_noop("The members of this team see the request."),
    # Text generation
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
)
