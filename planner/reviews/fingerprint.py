"""A fingerprint of a model directory: the file names, their sizes and a hash of each safetensors header
(the tensor names, shapes, dtypes and offsets). Cheap to compute nightly (no weights are read), and it
changes whenever the model is replaced, retrained or re-exported."""

from __future__ import annotations

import hashlib
from pathlib import Path

from django.conf import settings

from planner.model_sources import archive_dir
from planner.models import PocRequest

MAX_HEADER_BYTES = 100 * 2**20  # safetensors refuses larger headers too


def model_fingerprint(path: Path) -> str:
    """The sha256 of every file's relative name and size, and of each safetensors file's header bytes;
    "" when the directory is not there."""
    if not path.is_dir():
        return ""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\n".encode())
        if file.suffix == ".safetensors":
            with file.open("rb") as handle:
                prefix = handle.read(8)
                length = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
                if 0 < length <= MAX_HEADER_BYTES:
                    digest.update(hashlib.sha256(prefix + handle.read(length)).digest())
    return digest.hexdigest()


def model_dir(poc_request: PocRequest) -> Path | None:
    """Where the request's model lives on this server; None for a Hub model (pinned to a commit)."""
    if poc_request.model_source == PocRequest.ModelSource.HUB:
        return None
    if poc_request.model_source == PocRequest.ModelSource.ARCHIVE:
        return archive_dir(poc_request.pk)
    if poc_request.model_ref == "demo":
        causal = poc_request.task == PocRequest.Task.CAUSAL_LM
        return Path(settings.DEMO_LLM_DIR if causal else settings.DEMO_MODEL_DIR)
    return settings.MODELS_ROOT / poc_request.model_ref


def model_fingerprint_for(poc_request: PocRequest, *, archive: Path | None = None) -> str:
    """The request's model fingerprint (``archive``: the staged archive, before the request has its own
    folder); "" for a Hub model or a directory that is not there."""
    path = archive if archive is not None else model_dir(poc_request)
    return model_fingerprint(path) if path is not None else ""
