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
os.environ.setdefault("MEASURE_WARMUP", "1")
os.environ.setdefault("MEASURE_THREADS", "1")
os.environ.setdefault("MEASURE_NEW_TOKENS", "4")
os.environ.setdefault("MEASURE_MAX_PROMPT_TOKENS", "16")
# Interleaved timing: exactly 10 rounds of 10 iterations of each model per batch size, i.e. the 100 samples
# a p95 needs (p99 needs 500: it is None here), whatever the precision; a tiny model's forward pass takes
# about a millisecond, so a batch size costs well under a second. No re-measuring: an unstable result on a
# shared test machine is stored as such (tests/workers/test_runner.py re-measures on purpose).
os.environ.setdefault("MEASURE_ITERATIONS_PER_ROUND", "10")
os.environ.setdefault("MEASURE_MIN_ROUNDS", "10")
os.environ.setdefault("MEASURE_MAX_ROUNDS", "10")
os.environ.setdefault("MEASURE_MIN_ITERATIONS", "100")
os.environ.setdefault("MEASURE_GENERATION_ITERATIONS", "100")
os.environ.setdefault("MEASURE_BOOTSTRAP_RESAMPLES", "500")
os.environ.setdefault("MEASURE_REMEASURE", "0")
os.environ.setdefault("MEASURE_REMEASURE_PAUSE_S", "0")
# The serving scenario: short trials (the 100 requests a 95% share needs, over 0.1 s at least), three
# bisection steps, one max wait, replies of at most 4 tokens: a few seconds per candidate on a tiny model.
os.environ.setdefault("MEASURE_GOODPUT_MAX_WAITS_MS", "1")
os.environ.setdefault("MEASURE_GOODPUT_STEPS", "3")
os.environ.setdefault("MEASURE_GOODPUT_WARMUP_REQUESTS", "10")
os.environ.setdefault("MEASURE_GOODPUT_WARMUP_SECONDS", "0")
os.environ.setdefault("MEASURE_GOODPUT_MIN_REQUESTS", "100")
os.environ.setdefault("MEASURE_GOODPUT_MAX_REQUESTS", "300")
os.environ.setdefault("MEASURE_GOODPUT_MIN_SECONDS", "0.1")
os.environ.setdefault("MEASURE_GOODPUT_TRIAL_MAX_SECONDS", "1.5")
os.environ.setdefault("MEASURE_GOODPUT_MAX_SECONDS", "4")
os.environ.setdefault("MEASURE_GOODPUT_MAX_TOKENS", "4")

from planner.settings import *  # noqa: E402,F403

SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_SSL_REDIRECT = False  # the test client and live server speak plain HTTP
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
