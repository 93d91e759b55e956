"""Test settings: the real PostgreSQL and Redis of the machine, small measurement budgets."""

import os
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("DEBUG", "false")
# One scratch folder per test session, shared with the worker processes the tests start.
os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="roi-planner-tests-"))
os.environ.setdefault("MEASURE_BATCH_SIZES", "1,4")
os.environ.setdefault("MEASURE_MIN_ITERATIONS", "5")
os.environ.setdefault("MEASURE_MIN_SECONDS", "0")
os.environ.setdefault("MEASURE_WARMUP", "1")
os.environ.setdefault("MEASURE_THREADS", "1")
os.environ.setdefault("MEASURE_NEW_TOKENS", "4")
os.environ.setdefault("MEASURE_MAX_PROMPT_TOKENS", "16")
os.environ.setdefault("MEASURE_GENERATION_ITERATIONS", "2")

from planner.settings import *  # noqa: E402,F403

SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_SSL_REDIRECT = False  # the test client and live server speak plain HTTP
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
