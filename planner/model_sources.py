"""Where a request's model comes from besides a folder under MODELS_ROOT: an uploaded archive, extracted
here in the web process before the request is queued, or a Hugging Face Hub repository at a pinned commit,
fetched by the worker (``hub_snapshot``). Both end in a directory that ``check_model_dir`` accepts:
safetensors only, no auto_map, no links out, within MODEL_MAX_BYTES."""

from __future__ import annotations

import gzip
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from django import forms
from django.conf import settings

from planner.models import PocRequest
from plugins.artifacts import ModelLoadError, check_model_dir

HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# What the worker fetches from the Hub: the weights in safetensors, configs and tokenizer files. Pickle
# checkpoints and code are never downloaded.
HUB_FILES = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.txt", "*.model", "*.tiktoken", "*.md"]
_CHUNK = 1 << 20
LOCAL, ARCHIVE, HUB = PocRequest.ModelSource.values


class ArchiveError(ValueError):
    """The archive cannot be used; the message says why and what to do."""


def archive_dir(request_id: int) -> Path:
    """The folder an uploaded archive of this request is extracted into."""
    return settings.MODEL_ARCHIVES_ROOT / f"request-{request_id}"


def archive_stage(upload: Any, *, task: str) -> tuple[Path, dict[str, Any]]:
    """Extract an uploaded .zip or .tar(.gz) into a new staging folder and check the model in it; return the
    folder and the parsed config.json. Nothing is left behind when it is refused."""
    if upload.size > settings.MODEL_ARCHIVE_MAX_BYTES:
        raise ArchiveError(
            f"The archive is {upload.size / 2**20:.0f} MiB; the limit is "
            f"{settings.MODEL_ARCHIVE_MAX_BYTES / 2**20:.0f} MiB. Upload a smaller model, or place it under "
            "the models folder on the server."
        )
    stage = settings.MODEL_ARCHIVES_ROOT / f"staging-{uuid.uuid4().hex}"
    stage.mkdir(parents=True)
    try:
        _extract(upload, stage)
        model = _model_root(stage)
        config = check_model_dir(model, task=task, max_bytes=settings.MODEL_MAX_BYTES)
        if model != stage:  # the archive held one folder: its content is the model
            inner = stage.with_name(stage.name + "-model")
            model.rename(inner)
            shutil.rmtree(stage)
            inner.rename(stage)
    except ModelLoadError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise ArchiveError(f"The archive's model cannot be used: {exc}") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return stage, config


def archive_keep(stage: Path, request_id: int) -> Path:
    """Move a staged archive into the request's own folder."""
    target = archive_dir(request_id)
    shutil.rmtree(target, ignore_errors=True)
    stage.rename(target)
    return target


def archive_discard(stage: Path | None) -> None:
    if stage is not None:
        shutil.rmtree(stage, ignore_errors=True)


def _model_root(stage: Path) -> Path:
    """The extracted folder itself, or the one folder it holds when the model was archived with its folder."""
    entries = list(stage.iterdir())
    if not (stage / "config.json").is_file() and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return stage


def _member_path(name: str) -> PurePosixPath:
    """The relative path a member may be written to; ArchiveError for an absolute path or one with '..'."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise ArchiveError(
            f"The archive holds {name[:200]!r}, a path outside the model folder; archive the model "
            "directory's files with relative paths only."
        )
    return path


def _extract(upload: Any, stage: Path) -> None:
    upload.seek(0)
    head = upload.read(8)
    upload.seek(0)
    if head.startswith(b"PK"):
        members = _zip_members(upload)
    else:
        try:
            members = _tar_members(upload)
        except tarfile.TarError:
            raise ArchiveError(
                "The model archive is neither a .zip nor a .tar (.tar.gz, .tar.bz2, .tar.xz) file."
            ) from None
    total, count = 0, 0
    limit = settings.MODEL_ARCHIVE_MAX_BYTES
    try:
        for name, is_dir, stream in members:
            count += 1
            if count > settings.MODEL_ARCHIVE_MAX_MEMBERS:
                raise ArchiveError(
                    f"The archive holds more than {settings.MODEL_ARCHIVE_MAX_MEMBERS} files and folders; "
                    "archive only the model directory (weights, config and tokenizer)."
                )
            relative = _member_path(name)
            if not relative.parts:
                continue
            target = stage.joinpath(*relative.parts)
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as out:  # "x": a member named twice is refused, not overwritten
                while chunk := stream.read(_CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise ArchiveError(
                            f"The archive's content is over {limit / 2**20:.0f} MiB once extracted; upload a "
                            "smaller model."
                        )
                    out.write(chunk)
    except FileExistsError as exc:
        raise ArchiveError(f"The archive holds {Path(exc.filename).name} twice; archive it once.") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"The archive is damaged ({exc.__class__.__name__}); create it again.") from None


def _link_refused(name: str) -> ArchiveError:
    return ArchiveError(
        f"The archive holds {name[:200]!r}, a link or special file; archive the files themselves "
        "(links may point anywhere on the server)."
    )


def _zip_members(upload: IO[bytes]) -> Iterator[tuple[str, bool, IO[bytes]]]:
    try:
        archive = zipfile.ZipFile(upload)
    except zipfile.BadZipFile:
        raise ArchiveError("The model archive is not a valid .zip file; create it again.") from None
    with archive:
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _link_refused(info.filename)
            if info.is_dir():
                yield info.filename, True, None  # type: ignore[misc]
            else:
                with archive.open(info) as stream:
                    yield info.filename, False, stream


def _tar_members(upload: IO[bytes]) -> Iterator[tuple[str, bool, IO[bytes]]]:
    archive = tarfile.open(fileobj=upload, mode="r:*")  # noqa: SIM115 (closed below, after the members)

    def members() -> Iterator[tuple[str, bool, IO[bytes]]]:
        with archive:
            for info in archive:
                if info.isdir():
                    yield info.name, True, None  # type: ignore[misc]
                elif info.isfile():
                    stream = archive.extractfile(info)
                    assert stream is not None
                    yield info.name, False, stream
                else:
                    raise _link_refused(info.name)

    return members()


# --- the Hub (worker side) ----------------------------------------------------------------------------------


def hub_snapshot(*, repo_id: str, revision: str, task: str) -> Path:
    """The model at this commit of a Hub repository, fetched into the Hub cache (HF_HUB_CACHE) unless it is
    there already, and checked like any model directory; every file must lie inside the repository's cache
    folder. Runs in the worker: the web process never reaches the network for a model."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if not HUB_ID.match(repo_id) or not COMMIT.match(revision):
        raise ModelLoadError(f"{repo_id}@{revision} is not a Hub id at a 40-hex commit")
    try:
        path = Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=HUB_FILES, token=settings.HF_TOKEN or None
            )
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{repo_id}@{revision[:12]} could not be fetched from the Hub ({exc.__class__.__name__}: "
            f"{str(exc)[:300]}); check the id and the commit, and HF_TOKEN for a private model"
        ) from None
    repo_folder = path.parent.parent.resolve()  # models--org--name (snapshots/<commit> under it)
    for item in path.rglob("*"):
        if repo_folder not in item.resolve().parents:
            raise ModelLoadError(f"{repo_id}: {item.name} links out of the Hub cache; refused")
    check_model_dir(path, task=task, max_bytes=settings.MODEL_MAX_BYTES)
    return path


def hub_errors(*, repo_id: str, revision: str) -> dict[str, str]:
    """What is wrong with a Hub id and commit as a request names them (checked without the network)."""
    errors = {}
    if not HUB_ID.match(repo_id):
        errors["hub_model"] = (
            "Give the Hub id as org/name (letters, digits, '.', '_' and '-'), e.g. org/my-model."
        )
    if not COMMIT.match(revision):
        errors["model_revision"] = (
            "Pin the model to a commit: its full 40-hex id (the repository's history on the Hub lists them); "
            "a branch or tag could change under the request."
        )
    return errors


class ModelSourceFields(forms.Form):
    """The request form's choice of model source and its fields (planner.forms.PocRequestForm mixes it in):
    an archive is extracted and checked while the form is validated, and discarded if the form is refused;
    a Hub id and commit are checked for their shape only (the worker fetches them)."""

    model_source = forms.ChoiceField(
        label="Model source", choices=PocRequest.ModelSource.choices, required=False, widget=forms.RadioSelect
    )
    model_archive = forms.FileField(
        label="Model archive",
        required=False,
        help_text="A .zip or .tar of a folder saved with save_pretrained(): safetensors, config and tokenizer.",
    )
    hub_model = forms.CharField(label="Hub model id", required=False, max_length=200, help_text="org/name")
    model_config: dict[str, Any] | None  # the checked config.json (set by the form that mixes this in)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.staged_archive: Path | None = None
        if self.is_bound and self.data.get("model_source") in (ARCHIVE, HUB):
            self.fields["model_ref"].required = False

    def full_clean(self) -> None:
        super().full_clean()
        if self.errors and self.staged_archive is not None:  # refused: nothing of it is kept
            archive_discard(self.staged_archive)
            self.staged_archive = None

    def clean_model_source(self) -> str:
        return self.cleaned_data.get("model_source") or LOCAL

    def clean_model_archive(self) -> Any:
        upload, task = self.cleaned_data.get("model_archive"), self._chosen_task()  # type: ignore[attr-defined]
        if self.cleaned_data.get("model_source") != ARCHIVE or task is None:
            return None
        if upload is None:
            raise forms.ValidationError("Choose a .zip or .tar of the model folder to upload.")
        try:
            self.staged_archive, self.model_config = archive_stage(upload, task=task)
        except ArchiveError as exc:
            raise forms.ValidationError(str(exc)) from None
        return upload

    def clean(self) -> dict[str, Any]:
        """model_ref holds the Hub id, or the archive's file name, for those sources."""
        data = super().clean()
        assert data is not None  # the forms' clean() (ModelForm's below this one) return cleaned_data
        source = data.get("model_source")
        if source == HUB:
            problems = hub_errors(repo_id=data.get("hub_model", ""), revision=data.get("model_revision", ""))
            for field, message in problems.items():
                self.add_error(field, message)
            data["model_ref"] = data.get("hub_model") or "?"
        else:
            data["model_revision"] = ""
        if source == ARCHIVE:
            upload = data.get("model_archive")
            data["model_ref"] = Path(upload.name).name[:200] if upload else "?"
        return data

    def model_source_kwargs(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "model_source": data["model_source"],
            "model_revision": data["model_revision"],
            "model_archive_dir": self.staged_archive,
        }
