from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

MAX_OUTPUT_TOKENS = 32_768
PER_TOKEN_TARGET_REQUIRED = _(
    "Text generation needs a per-token latency target: the p95 time between two generated tokens that "
    "readers accept (for example 50 ms)."
)

CURRENCIES = [
    ("USD", _("US dollar")),
    ("EUR", _("Euro")),
    ("JPY", _("Japanese yen")),
    ("GBP", _("Pound sterling")),
]


class Team(models.Model):
    """The unit of visibility: a request belongs to a team, and only its members (and staff) see it."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="teams", blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class HardwareProfile(models.Model):
    class DeviceKind(models.TextChoices):
        CPU = "cpu", _("CPU")
        CUDA = "cuda", _("NVIDIA GPU (CUDA)")

    name = models.CharField(max_length=100, unique=True)
    device_kind = models.CharField(max_length=8, choices=DeviceKind.choices)
    price_per_hour = models.DecimalField(
        max_digits=12, decimal_places=4, validators=[MinValueValidator(Decimal("0"))]
    )
    currency = models.CharField(max_length=3, choices=CURRENCIES, default="USD")
    power_watts = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("Average draw, for energy and CO₂.")
    )
    notes = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["device_kind", "price_per_hour"]

    def __str__(self) -> str:
        return f"{self.name} ({self.price_per_hour.normalize():f} {self.currency}/h)"

    @property
    def queue(self) -> str:
        return "gpu" if self.device_kind == self.DeviceKind.CUDA else "cpu"


class PocRequest(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Finished")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    class Decision(models.TextChoices):
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")

    class Task(models.TextChoices):
        SEQUENCE_CLASSIFICATION = "sequence-classification", _("Text classification")
        CAUSAL_LM = "causal-lm", _("Text generation (causal LM)")

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="poc_requests",
        verbose_name=_("owner"),
    )
    title = models.CharField(_("title"), max_length=200)
    task = models.CharField(max_length=32, choices=Task.choices, default=Task.SEQUENCE_CLASSIFICATION)
    # "demo" or a directory relative to MODELS_ROOT.
    model_ref = models.CharField(max_length=500)
    # "demo" or "upload" (then dataset_file holds the CSV/JSONL).
    dataset_ref = models.CharField(max_length=500)
    dataset_file = models.FileField(upload_to="datasets/%Y/%m/", blank=True)
    # For text generation: the p95 target of the time to first token (TTFT).
    p95_target_ms = models.DecimalField(
        _("p95 latency target (ms)"),
        max_digits=10,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0.1")), MaxValueValidator(600_000)],
    )
    # Text generation only (required there): the p95 target of the time between two generated tokens.
    per_token_target_ms = models.DecimalField(
        _("per-token latency target (ms)"),
        max_digits=10,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.1")), MaxValueValidator(60_000)],
    )
    output_tokens_per_request = models.PositiveIntegerField(
        _("output tokens per request"),
        default=128,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_OUTPUT_TOKENS)],
    )
    perplexity_increase_pct = models.DecimalField(
        # xgettext:no-python-format
        _("max perplexity rise over the baseline (%)"),
        max_digits=6,
        decimal_places=2,
        default=Decimal("10"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1000"))],
    )
    # Classification only; a text-generation request keeps the value it was filed with, unused.
    accuracy_floor_pct = models.DecimalField(
        # xgettext:no-python-format
        _("accuracy floor (% of baseline)"),
        max_digits=5,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("1")), MaxValueValidator(Decimal("100"))],
    )
    requests_per_day = models.PositiveBigIntegerField(
        _("requests per day"), validators=[MaxValueValidator(10**12)]
    )
    peak_factor = models.DecimalField(
        _("peak factor"),
        max_digits=6,
        decimal_places=2,
        default=Decimal("2"),
        validators=[MinValueValidator(Decimal("1")), MaxValueValidator(Decimal("100"))],
    )
    target_utilisation = models.DecimalField(
        _("target utilisation"),
        max_digits=4,
        decimal_places=2,
        default=Decimal("0.7"),
        validators=[MinValueValidator(Decimal("0.05")), MaxValueValidator(Decimal("1"))],
    )
    hardware = models.ForeignKey(
        HardwareProfile, on_delete=models.PROTECT, related_name="poc_requests", verbose_name=_("hardware")
    )
    horizon_months = models.PositiveSmallIntegerField(
        _("horizon (months)"), default=12, validators=[MinValueValidator(1), MaxValueValidator(120)]
    )
    engineering_hours = models.DecimalField(
        _("engineering hours"),
        max_digits=8,
        decimal_places=1,
        default=Decimal("40"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100000"))],
    )
    engineering_rate = models.DecimalField(
        _("engineering rate per hour"),
        max_digits=10,
        decimal_places=2,
        default=Decimal("100"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1000000"))],
    )
    currency = models.CharField(_("currency"), max_length=3, choices=CURRENCIES, default="USD")

    team = models.ForeignKey(
        "Team", on_delete=models.PROTECT, related_name="poc_requests", verbose_name=_("team")
    )

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The broker message that carries this request, and the last sign of life from the worker running it:
    # the reconciler compares both with the broker and the clock to find requests the broker lost.
    task_id = models.CharField(max_length=64, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    decision = models.CharField(max_length=16, choices=Decision.choices, blank=True)
    decision_comment = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("decide_pocrequest", "Can approve or reject a request's recommendation"),
            ("view_portfolio", "Can see the portfolio of the team's requests"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def is_generative(self) -> bool:
        return self.task == self.Task.CAUSAL_LM


class Candidate(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        MEASURED = "measured", _("Measured")
        FAILED = "failed", _("Failed")

    request = models.ForeignKey(PocRequest, on_delete=models.CASCADE, related_name="candidates")
    position = models.PositiveSmallIntegerField()
    # [] is the baseline: the model as it is.
    pipeline = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)

    accuracy = models.FloatField(null=True, blank=True)
    macro_f1 = models.FloatField(null=True, blank=True)
    # Text generation: perplexity on held-out text, and the share of reference completions matched.
    perplexity = models.FloatField(null=True, blank=True)
    exact_match = models.FloatField(null=True, blank=True)
    # [{"batch_size", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "throughput_rps", "iterations"}, ...]; for text
    # generation the times are of one whole generation, and each point adds "prompt_tokens", "new_tokens",
    # "ttft_p50_ms", "ttft_p95_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p95_ms", "itl_p99_ms", "tokens_per_s".
    latency = models.JSONField(default=list, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    parameters = models.BigIntegerField(null=True, blank=True)
    nonzero_parameters = models.BigIntegerField(null=True, blank=True)
    peak_memory_bytes = models.BigIntegerField(null=True, blank=True)
    produce_seconds = models.FloatField(null=True, blank=True)
    device_hours = models.FloatField(null=True, blank=True)
    environment = models.JSONField(default=dict, blank=True)
    notes = models.JSONField(default=dict, blank=True)
    artifact_path = models.CharField(max_length=500, blank=True)
    measured_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["request", "position"]
        constraints = [
            models.UniqueConstraint(fields=["request", "position"], name="candidate_unique_position")
        ]

    def __str__(self) -> str:
        return f"{self.request_id}#{self.position} {self.label}"

    @property
    def is_baseline(self) -> bool:
        return not self.pipeline

    @property
    def label(self) -> str:
        from plugins.registry import pipeline_label

        return pipeline_label(self.pipeline)

    def latency_at(self, batch_size: int) -> dict | None:
        return next((p for p in self.latency if p["batch_size"] == batch_size), None)


class PocRequestSummary(models.Model):
    """A finished request's recommendation and money, as the portfolio lists and totals them.

    Derived data, never edited: ``services.poc_request_summaries_refresh`` rebuilds it from the measured
    candidates with ``roi.evaluate`` (when a PoC finishes, and for every request with
    ``manage.py refresh_summaries`` after prices or the ROI rules change). It is stored because evaluating
    every request on each portfolio load costs about 0.3 ms per request: 300 ms for 1,000 requests.
    Amounts are in the request's currency, kept to 6 decimal places (far below a cent, so sums of
    thousands of them stay exact to the cent).
    """

    class Outcome(models.TextChoices):
        SWITCH = "switch", _("Switch to a candidate")
        KEEP = "keep", _("Keep the current model")
        BLOCKED = "blocked", _("No candidate meets the targets")

    request = models.OneToOneField(
        PocRequest, on_delete=models.CASCADE, primary_key=True, related_name="summary"
    )
    outcome = models.CharField(max_length=8, choices=Outcome.choices, db_index=True)
    # The recommended candidate (the baseline when the outcome is "keep"); None when blocked.
    candidate = models.ForeignKey(
        Candidate, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    candidate_label = models.CharField(max_length=500, blank=True)
    baseline_monthly_cost = models.DecimalField(max_digits=26, decimal_places=6, null=True, blank=True)
    monthly_cost = models.DecimalField(max_digits=26, decimal_places=6, null=True, blank=True)
    monthly_savings = models.DecimalField(max_digits=26, decimal_places=6, null=True, blank=True)
    one_time_cost = models.DecimalField(max_digits=26, decimal_places=6, null=True, blank=True)
    payback_months = models.DecimalField(max_digits=26, decimal_places=6, null=True, blank=True)
    roi = models.DecimalField(max_digits=26, decimal_places=6, null=True, blank=True)
    # When blocked: which target stops every candidate and how close the best one came, as plain JSON
    # ({"p95": {"target_ms", "best_ms", "candidate"}, "accuracy": {"floor", "best", "candidate"}}; for text
    # generation {"latency": {"ttft_target_ms", "itl_target_ms", "ttft_ms", "itl_ms", "candidate"},
    # "perplexity": {"ceiling", "baseline", "best", "candidate"}}).
    blocking = models.JSONField(default=dict, blank=True)
    computed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.request_id}: {self.outcome}"
