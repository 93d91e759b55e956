import dataclasses
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from workers.record import Measurement

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
    # Published peaks, for the pre-flight estimate (planner.preflight); blank: no estimate for this profile.
    peak_fp32_tflops = models.FloatField(_("peak fp32 (TFLOP/s)"), null=True, blank=True)
    peak_bf16_tflops = models.FloatField(_("peak bf16 (TFLOP/s)"), null=True, blank=True)
    peak_int8_tops = models.FloatField(_("peak int8 (TOP/s)"), null=True, blank=True)
    memory_bandwidth_gbps = models.FloatField(_("memory bandwidth (GB/s)"), null=True, blank=True)

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

    class ModelSource(models.TextChoices):
        LOCAL = "local", _("A model folder on the server")
        ARCHIVE = "archive", _("An uploaded archive (.zip or .tar)")
        HUB = "hub", _("Hugging Face Hub, at a pinned commit")

    model_source = models.CharField(
        _("model source"), max_length=8, choices=ModelSource.choices, default=ModelSource.LOCAL
    )
    # local: "demo" or a directory relative to MODELS_ROOT; archive: the uploaded file's name (extracted
    # under MODEL_ARCHIVES_ROOT, planner.model_sources); hub: the repository id, e.g. "org/name".
    model_ref = models.CharField(max_length=500)
    # hub only: the commit the model is fetched at (40 hex digits), so a run never changes under the request.
    model_revision = models.CharField(
        _("model revision"),
        max_length=40,
        blank=True,
        validators=[RegexValidator(r"^([0-9a-f]{40})?$", _("A revision is a commit id: 40 hex digits."))],
    )
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

    class ServingRuntime(models.TextChoices):
        """What serves the model today (plugins.runtime.RUNTIMES_BY_DEVICE: which ones run on which device)."""

        PYTORCH = "pytorch", _("PyTorch (transformers, eager)")
        ONNXRUNTIME = "onnxruntime", _("ONNX Runtime (CPU)")
        OPENVINO = "openvino", _("OpenVINO (CPU)")
        VLLM = "vllm", _("vLLM (GPU)")

    # The baseline is measured on this runtime (the runtime technique converts it before it is measured).
    serving_runtime = models.CharField(
        _("served today with"),
        max_length=16,
        choices=ServingRuntime.choices,
        default=ServingRuntime.PYTORCH,
        blank=True,
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

    # Recurring cost of a compressed model (roi.maintenance): engineering hours a month, and how often the
    # teacher is updated (each update means producing the candidate again).
    maintenance_hours_per_month = models.DecimalField(
        _("maintenance hours per month"),
        max_digits=7,
        decimal_places=1,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("10000"))],
    )
    teacher_updates_per_year = models.PositiveSmallIntegerField(
        _("teacher updates per year"), default=0, validators=[MaxValueValidator(365)]
    )

    class RerunSchedule(models.TextChoices):
        NEVER = "never", _("Never")
        MONTHLY = "monthly", _("Monthly")
        QUARTERLY = "quarterly", _("Quarterly")

    # Re-run the PoC on this schedule (and whenever the model's files change): planner.reviews.
    rerun_schedule = models.CharField(
        _("re-run the PoC"), max_length=16, choices=RerunSchedule.choices, default=RerunSchedule.NEVER
    )
    # The model files as measured (planner.reviews.fingerprint: names, sizes, safetensors headers); blank
    # for a Hub model (pinned to a commit) or before the first run.
    model_fingerprint = models.CharField(max_length=64, blank=True)
    rerun_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reruns"
    )

    class Mode(models.TextChoices):
        PIPELINES = "pipelines", _("Measure the pipelines I list")
        SEARCH = "search", _("Find the cheapest model that meets my targets")

    # "search": the worker searches the technique space (workers/search.py) within the budget below.
    mode = models.CharField(_("mode"), max_length=16, choices=Mode.choices, default=Mode.PIPELINES)
    search_max_trials = models.PositiveSmallIntegerField(
        _("at most this many trials"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(200)],
    )
    search_max_minutes = models.PositiveIntegerField(
        _("at most this many minutes"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(10_080)],
    )
    # Why the search stopped (workers.search STOP_*), with its figures: {"best_cost", "bound", "seconds"}.
    search_stop_reason = models.CharField(max_length=16, blank=True)
    search_summary = models.JSONField(default=dict, blank=True)

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
    # workers.record.Goodput as JSON: the highest Poisson arrival rate at which the target share of requests
    # met the targets behind a dynamic batcher, with its setting and the latency-against-load curve.
    # None: not measured (a row from before the serving scenario); roi then uses the static capacity.
    goodput = models.JSONField(null=True, blank=True)
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

    def set_measurement(self, measurement: Measurement) -> None:
        """Set the figure columns from ``measurement`` (one column per field of it; the caller saves)."""
        stored = measurement.to_json()
        for field in dataclasses.fields(Measurement):
            setattr(self, field.name, stored.get(field.name))

    @property
    def measurement(self) -> Measurement | None:
        """The figures of a measured candidate, read back from its columns; None until it is measured."""
        if self.status != self.Status.MEASURED:
            return None
        return Measurement.from_json({f.name: getattr(self, f.name) for f in dataclasses.fields(Measurement)})


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
        UNDECIDED = "undecided", _("Not decided: the measurements cannot tell")

    request = models.OneToOneField(
        PocRequest, on_delete=models.CASCADE, primary_key=True, related_name="summary"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices, db_index=True)
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


class SwitchPrediction(models.Model):
    """What an approved switch was predicted to save, frozen on the day it was approved (that day's prices
    and traffic), so the review compares the actual bills with the promise and not with today's figures."""

    request = models.OneToOneField(
        PocRequest, on_delete=models.CASCADE, primary_key=True, related_name="prediction"
    )
    candidate = models.ForeignKey(
        Candidate, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    candidate_label = models.CharField(max_length=500)
    currency = models.CharField(max_length=3, choices=CURRENCIES)
    price_per_hour = models.DecimalField(max_digits=12, decimal_places=4)
    requests_per_day = models.PositiveBigIntegerField()
    baseline_monthly_cost = models.DecimalField(max_digits=26, decimal_places=6)
    monthly_cost = models.DecimalField(max_digits=26, decimal_places=6)  # serving only
    monthly_maintenance = models.DecimalField(max_digits=26, decimal_places=6, default=Decimal("0"))
    monthly_savings = models.DecimalField(max_digits=26, decimal_places=6)
    one_time_cost = models.DecimalField(max_digits=26, decimal_places=6)
    payback_months = models.DecimalField(max_digits=26, decimal_places=6, null=True, blank=True)
    horizon_months = models.PositiveSmallIntegerField()
    approved_at = models.DateTimeField()
    # Set while the actual savings fall below REVIEW_SHORTFALL_SHARE of the predicted ones.
    shortfall_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.request_id}: {self.candidate_label}"


class MonthlyActual(models.Model):
    """One month of an approved switch in production: the traffic served and the serving bill."""

    request = models.ForeignKey(PocRequest, on_delete=models.CASCADE, related_name="actuals")
    month = models.DateField(_("month"))  # the first day of the month
    requests = models.PositiveBigIntegerField(_("requests"), validators=[MaxValueValidator(10**15)])
    serving_cost = models.DecimalField(
        _("serving cost"),
        max_digits=16,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0"))],
    )
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    entered_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["request", "month"]
        constraints = [models.UniqueConstraint(fields=["request", "month"], name="actual_unique_month")]

    def __str__(self) -> str:
        return f"{self.request_id} {self.month:%Y-%m}"


class RecommendationWatch(models.Model):
    """What the nightly re-evaluation last saw of a request: its recommendation under the price of its
    hardware then. A change of recommendation since is a RecommendationChange."""

    request = models.OneToOneField(
        PocRequest, on_delete=models.CASCADE, primary_key=True, related_name="watch"
    )
    outcome = models.CharField(max_length=16)
    candidate_label = models.CharField(max_length=500, blank=True)
    price_per_hour = models.DecimalField(max_digits=12, decimal_places=4)
    evaluated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.request_id}: {self.outcome}"


class RecommendationChange(models.Model):
    """A request whose recommendation changed under the current economics (found by the nightly job)."""

    request = models.ForeignKey(PocRequest, on_delete=models.CASCADE, related_name="recommendation_changes")
    detected_at = models.DateTimeField(db_index=True)
    previous_outcome = models.CharField(max_length=16)
    previous_candidate = models.CharField(max_length=500, blank=True)
    new_outcome = models.CharField(max_length=16)
    new_candidate = models.CharField(max_length=500, blank=True)
    hardware_name = models.CharField(max_length=100)
    previous_price = models.DecimalField(max_digits=12, decimal_places=4)
    new_price = models.DecimalField(max_digits=12, decimal_places=4)
    new_payback_months = models.DecimalField(max_digits=26, decimal_places=6, null=True, blank=True)

    class Meta:
        ordering = ["-detected_at"]

    def __str__(self) -> str:
        return f"{self.request_id}: {self.previous_outcome} → {self.new_outcome}"


class SearchTrial(models.Model):
    """One point the search proposed, in the order it ran: its parameters, the candidate measured for it
    (none when the pipeline was refused before it was produced), its value and constraints as the search
    saw them, and the pre-flight estimate it was proposed with."""

    request = models.ForeignKey(PocRequest, on_delete=models.CASCADE, related_name="search_trials")
    number = models.PositiveSmallIntegerField()
    params = models.JSONField(default=dict)
    candidate = models.OneToOneField(
        Candidate, on_delete=models.SET_NULL, null=True, blank=True, related_name="search_trial"
    )
    state = models.CharField(max_length=16)  # measured, failed, invalid
    error = models.TextField(blank=True)
    cost = models.FloatField(null=True, blank=True)  # total over the horizon; None: no batch size meets p95
    feasible = models.BooleanField(null=True)
    constraints = models.JSONField(default=list, blank=True)
    estimate_ms = models.FloatField(null=True, blank=True)  # calibrated batch-1 estimate when proposed
    optimistic_cost = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "number"]
        constraints = [
            models.UniqueConstraint(fields=["request", "number"], name="search_trial_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.request_id} trial {self.number}"


class HardwareCalibration(models.Model):
    """The pre-flight estimate's two factors on a hardware profile, fitted on a finished run's batch-1
    measurements (planner.preflight.fit_calibration): ``efficiency`` scales the roofline part of the time,
    ``overhead`` the per-layer framework overhead; the latest one is used for the next estimate."""

    hardware = models.ForeignKey(HardwareProfile, on_delete=models.CASCADE, related_name="calibrations")
    request = models.ForeignKey(
        PocRequest, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    efficiency = models.FloatField()
    overhead = models.FloatField(default=1.0)
    samples = models.PositiveSmallIntegerField()
    # Mean absolute relative error of the estimates on these samples, before and after this fit.
    error_before = models.FloatField()
    error_after = models.FloatField()
    fitted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["hardware", "-fitted_at"]

    def __str__(self) -> str:
        return f"{self.hardware_id}: roofline ×{self.efficiency:.2f}, overhead ×{self.overhead:.2f}"
