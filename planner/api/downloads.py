"""A measured candidate as one streamed .zip: its saved weights (the artifact directory, in the format it
was saved in), its tokenizer, and a README.md model card in the Hugging Face format (YAML front matter)
with the pipeline, the measured figures and their intervals, the environment and the request's targets."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.http import Http404, HttpRequest, StreamingHttpResponse
from django.views.decorators.http import require_GET

from planner import selectors
from planner.models import Candidate, PocRequest

_CHUNK = 1 << 20
PIPELINE_TAGS = {"sequence-classification": "text-classification", "causal-lm": "text-generation"}
FIGURES = ("accuracy", "macro_f1", "perplexity", "exact_match")
SIZES = ("size_bytes", "parameters", "nonzero_parameters", "peak_memory_bytes", "produce_seconds")


def candidate_files(candidate: Candidate) -> list[tuple[str, Path]]:
    """The artifact's files (every one inside ARTIFACTS_ROOT, no links), its own README.md left out."""
    root = settings.ARTIFACTS_ROOT.resolve()
    folder = Path(candidate.artifact_path)
    if (
        candidate.status != Candidate.Status.MEASURED
        or not candidate.artifact_path
        or folder.is_symlink()
        or root not in folder.resolve().parents
        or not folder.is_dir()
    ):
        raise Http404("This candidate has no saved model to download.")
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file() or root not in path.resolve().parents:
            continue
        relative = path.relative_to(folder).as_posix()
        if relative != "README.md":
            files.append((relative, path))
    return files


def _point_metrics(point: dict[str, Any], task: str) -> list[dict[str, Any]]:
    b = point["batch_size"]
    names = ["p50_ms", "p95_ms", "p99_ms"] + (["ttft_p95_ms", "itl_p95_ms"] if task == "causal-lm" else [])
    out = []
    for name in names:
        if point.get(name) is None:
            continue
        low, high = point.get(name.replace("_ms", "_low_ms")), point.get(name.replace("_ms", "_high_ms"))
        metric = {"type": f"latency_{name}", "name": f"{name} at batch {b}", "value": point[name]}
        if low is not None and high is not None:
            metric["interval"] = [low, high]
        out.append(metric)
    if point.get("speedup") is not None:
        out.append(
            {"type": "speedup", "name": f"speedup at batch {b}", "value": point["speedup"]}
            | (
                {"interval": [point["speedup_low"], point["speedup_high"]]}
                if point.get("speedup_low")
                else {}
            )
        )
    return out


def model_card(candidate: Candidate, artifact_card: str = "") -> str:
    """The README.md of a candidate's download (Hugging Face model card: YAML front matter, then text)."""
    poc_request: PocRequest = candidate.request
    task = poc_request.task
    metrics = [
        {"type": name, "name": name, "value": getattr(candidate, name)}
        for name in FIGURES
        if getattr(candidate, name) is not None
    ]
    for point in candidate.latency:
        metrics += _point_metrics(point, task)
    techniques = [step["technique"] for step in candidate.pipeline]
    front = {
        "library_name": "transformers",
        "pipeline_tag": PIPELINE_TAGS.get(task, task),
        "base_model": poc_request.model_ref,
        "tags": ["roi-planner", "compressed" if techniques else "baseline", *techniques],
        "model-index": [
            {
                "name": f"{poc_request.title}: {candidate.label}",
                "results": [
                    {
                        "task": {"type": PIPELINE_TAGS.get(task, task)},
                        "dataset": {"name": poc_request.dataset_ref, "type": "held-out split"},
                        "metrics": metrics,
                    }
                ],
            }
        ],
    }
    targets = {
        "p95_target_ms": poc_request.p95_target_ms,
        "per_token_target_ms": poc_request.per_token_target_ms,
        "accuracy_floor_pct": poc_request.accuracy_floor_pct,
        "perplexity_increase_pct": poc_request.perplexity_increase_pct,
        "requests_per_day": poc_request.requests_per_day,
        "peak_factor": poc_request.peak_factor,
        "target_utilisation": poc_request.target_utilisation,
        "hardware": poc_request.hardware.name,
        "horizon_months": poc_request.horizon_months,
        "currency": poc_request.currency,
    }
    source = poc_request.model_ref + (f"@{poc_request.model_revision}" if poc_request.model_revision else "")
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {candidate.label}",
        "",
        f"Candidate {candidate.position} of PoC request {poc_request.pk} ({poc_request.title}), produced from "
        f"`{source}` ({poc_request.get_model_source_display()}) by the Compression ROI Planner.",
        "",
        "## Pipeline and parameters",
        "",
        "```json",
        json.dumps(candidate.pipeline, indent=2, ensure_ascii=False),
        "```",
        "",
        "## Measured figures",
        "",
        *(
            f"- {name}: {getattr(candidate, name)}"
            for name in (*FIGURES, *SIZES)
            if getattr(candidate, name) is not None
        ),
        "",
        "Latency per batch size, with bootstrap intervals [low, high] where measured:",
        "",
        "| batch | p50 ms | p95 ms [interval] | p99 ms | throughput/s | speedup [interval] | iterations | unstable |",
        "|---|---|---|---|---|---|---|---|",
        *(_sweep_row(p) for p in candidate.latency),
        "",
        "## The request's targets",
        "",
        *(f"- {name}: {value}" for name, value in targets.items() if value is not None),
        "",
        "## Environment",
        "",
        "```json",
        json.dumps(candidate.environment, indent=2, ensure_ascii=False, default=str),
        "```",
    ]
    if artifact_card.strip():
        lines += ["", "## Saved format", "", artifact_card.strip()]
    return "\n".join(lines) + "\n"


def _interval(point: dict[str, Any], value: str, low: str, high: str) -> str:
    shown = "—" if point.get(value) is None else f"{point[value]:.3f}"
    if point.get(low) is not None and point.get(high) is not None:
        shown += f" [{point[low]:.3f}, {point[high]:.3f}]"
    return shown


def _sweep_row(p: dict[str, Any]) -> str:
    cells = [
        str(p["batch_size"]),
        _interval(p, "p50_ms", "p50_low_ms", "p50_high_ms"),
        _interval(p, "p95_ms", "p95_low_ms", "p95_high_ms"),
        _interval(p, "p99_ms", "p99_low_ms", "p99_high_ms"),
        f"{p.get('throughput_rps', 0):.1f}",
        _interval(p, "speedup", "speedup_low", "speedup_high"),
        str(p.get("iterations", "")),
        p.get("unstable") or "",
    ]
    return "| " + " | ".join(cells) + " |"


class _Sink:
    """The write end of a streamed zip: collects what zipfile writes until the response takes it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.written = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Nothing to release (zipfile never closes a file object it was given; the method makes the sink a
        writable file for its types)."""

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def zip_chunks(files: list[tuple[str, Path]], card: str, *, folder: str) -> Iterator[bytes]:
    """A zip of ``files`` and the card under ``folder``/, written as it is read (never whole in memory)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr(f"{folder}/README.md", card, compress_type=zipfile.ZIP_DEFLATED)
        yield sink.take()
        for name, path in files:
            info = zipfile.ZipInfo.from_file(path, f"{folder}/{name}")
            # Weights hardly compress; the JSON and tokenizer files do.
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".safetensors") else zipfile.ZIP_DEFLATED
            with open(path, "rb") as source, archive.open(info, "w", force_zip64=True) as target:
                while chunk := source.read(_CHUNK):
                    target.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


def candidate_archive_response(candidate: Candidate) -> StreamingHttpResponse:
    files = candidate_files(candidate)
    original = Path(candidate.artifact_path) / "README.md"
    artifact_card = (
        original.read_text(errors="replace") if original.is_file() and not original.is_symlink() else ""
    )
    folder = f"request-{candidate.request_id}-candidate-{candidate.pk}"
    response = StreamingHttpResponse(
        zip_chunks(files, model_card(candidate, artifact_card), folder=folder), content_type="application/zip"
    )
    response["Content-Disposition"] = f'attachment; filename="{folder}.zip"'
    return response


@require_GET
def candidate_download(request: HttpRequest, pk: int, candidate_pk: int) -> StreamingHttpResponse:
    """The page's download link (a logged-in session); another team's candidate is 404."""
    try:
        candidate = selectors.candidate_get_for_user(user=request.user, request_pk=pk, pk=candidate_pk)
    except Candidate.DoesNotExist:
        raise Http404("No such candidate") from None
    return candidate_archive_response(candidate)
