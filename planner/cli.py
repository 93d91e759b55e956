"""roi-planner: the planner's API from a terminal (docs/api.md). HTTP only: imports nothing of Django.

    roi-planner submit request.yaml --follow
    roi-planner status 42 --follow
    roi-planner results 42 --format csv
    roi-planner download 42 97 -o model.zip

--url and --token, or ROI_PLANNER_URL and ROI_PLANNER_TOKEN (a token from the admin, or
`manage.py drf_create_token USER`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
import yaml
from tqdm import tqdm

FILE_FIELDS = ("dataset_upload", "model_archive")
STRUCTURED = ("candidates", "pipelines", "params")
DONE = ("succeeded", "failed", "cancelled")
RESULT_COLUMNS = [
    "id",
    "label",
    "status",
    "accuracy",
    "perplexity",
    "p95_ms_b1",
    "p95_interval",
    "size_bytes",
]


class CliError(Exception):
    """Said to the user, exit status 1."""


class Client:
    def __init__(self, url: str, token: str, *, timeout: float = 60) -> None:
        if not url or not token:
            raise CliError("Give --url and --token (or set ROI_PLANNER_URL and ROI_PLANNER_TOKEN).")
        self.base = url.rstrip("/") + "/api/v1/"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.timeout = timeout

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else self.base + path
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise CliError(f"Cannot reach {url}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                raise CliError(f"{response.status_code} from {url}: {response.text[:300]}") from None
            lines = [f"{error['status']}: {error['message']}"]
            lines += [f"  {field}: {m}" for field, messages in error["fields"].items() for m in messages]
            raise CliError("\n".join(lines))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()


def load_request_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request as YAML or JSON: the API's fields; dataset_upload and model_archive are paths (relative to
    the file). Returns the multipart fields and the files to upload."""
    try:
        text = path.read_text(encoding="utf-8")
        body = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise CliError(f"Cannot read {path}: {exc}") from None
    if not isinstance(body, dict):
        raise CliError(f"{path} must hold a mapping of the request's fields (see docs/api.md).")
    fields: dict[str, Any] = {}
    files = {}
    for name, value in body.items():
        if name in FILE_FIELDS and value:
            upload = (path.parent / str(value)).expanduser()
            if not upload.is_file():
                raise CliError(f"{name}: {upload} is not a file.")
            files[name] = upload
        elif name in STRUCTURED:
            fields[name] = json.dumps(value)
        elif value is not None:
            fields[name] = "true" if value is True else "false" if value is False else str(value)
    return fields, files


def submit(client: Client, path: Path) -> dict[str, Any]:
    fields, files = load_request_file(path)
    handles = {name: (p.name, open(p, "rb")) for name, p in files.items()}  # noqa: SIM115 (closed below)
    try:
        return client.json("POST", "requests/", data=fields, files=handles or None)
    finally:
        for _name, handle in handles.values():
            handle.close()


def follow(client: Client, request_id: int, *, interval: float = 2.0) -> dict[str, Any]:
    """Poll the request until it ends, with a progress bar (on stderr) of its progress and message."""
    with tqdm(total=100, unit="%", file=sys.stderr, desc=f"request {request_id}", leave=True) as bar:
        while True:
            body = client.json("GET", f"requests/{request_id}/")
            bar.n = round(100 * float(body["progress"]))
            bar.set_postfix_str(f"{body['status']}: {body['progress_message']}"[:60])
            bar.refresh()
            if body["status"] in DONE:
                return body
            time.sleep(interval)


def _interval(point: dict[str, Any] | None) -> str:
    if not point or point.get("p95_low_ms") is None:
        return ""
    return f"[{point['p95_low_ms']:.3f}, {point['p95_high_ms']:.3f}]"


def result_rows(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for c in candidates:
        b1 = next((p for p in c["latency"] if p["batch_size"] == 1), None)
        rows.append(
            {
                "id": c["id"],
                "label": c["label"],
                "status": c["status"],
                "accuracy": c["accuracy"],
                "perplexity": c["perplexity"],
                "p95_ms_b1": b1.get("p95_ms") if b1 else None,
                "p95_interval": _interval(b1),
                "size_bytes": c["size_bytes"],
            }
        )
    return rows


def emit(rows: list[dict[str, Any]], columns: Sequence[str], fmt: str) -> None:
    out = sys.stdout
    if fmt == "json":
        json.dump(rows, out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
        widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
        out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
        for row in cells:
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def download(client: Client, request_id: int, candidate_id: int, output: Path | None) -> Path:
    response = client.call("GET", f"requests/{request_id}/candidates/{candidate_id}/download/", stream=True)
    name = response.headers.get("Content-Disposition", "").partition('filename="')[2].rstrip('"')
    target = output or Path(name or f"request-{request_id}-candidate-{candidate_id}.zip")
    total = int(response.headers.get("Content-Length", 0)) or None
    with open(target, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr) as bar:
        for chunk in response.iter_content(1 << 20):
            out.write(chunk)
            bar.update(len(chunk))
    return target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roi-planner", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("ROI_PLANNER_URL", ""), help="the planner's address")
    parser.add_argument("--token", default=os.environ.get("ROI_PLANNER_TOKEN", ""), help="your API token")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("submit", help="file a request from a YAML or JSON file")
    sub.add_argument("file", type=Path)
    sub.add_argument("--follow", action="store_true", help="then show its progress until it ends")
    status = commands.add_parser("status", help="a request's state")
    status.add_argument("request", type=int)
    status.add_argument("--follow", action="store_true")
    for name, help_text in [
        ("results", "a request's candidates and figures"),
        ("list", "your teams' requests"),
    ]:
        sub = commands.add_parser(name, help=help_text)
        if name == "results":
            sub.add_argument("request", type=int)
        else:
            sub.add_argument("--status", default="")
        sub.add_argument("--format", choices=["table", "json", "csv"], default="table")
    get = commands.add_parser("download", help="a measured candidate as a .zip with its model card")
    get.add_argument("request", type=int)
    get.add_argument("candidate", type=int)
    get.add_argument("-o", "--output", type=Path)
    cancel = commands.add_parser("cancel", help="stop a request")
    cancel.add_argument("request", type=int)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        client = Client(args.url, args.token)
        if args.command == "submit":
            body = submit(client, args.file)
            print(f"Request {body['id']} filed: {body['links']['page']}")
            if args.follow:
                body = follow(client, body["id"])
                print(f"Request {body['id']}: {body['status']} {body['error']}".rstrip())
        elif args.command == "status":
            body = (
                follow(client, args.request)
                if args.follow
                else client.json("GET", f"requests/{args.request}/")
            )
            print(f"{body['status']} {round(100 * body['progress'])}% {body['progress_message']}".rstrip())
        elif args.command == "results":
            candidates = client.json("GET", f"requests/{args.request}/candidates/")
            if args.format == "json":
                emit(candidates, [], "json")
            else:
                emit(result_rows(candidates), RESULT_COLUMNS, args.format)
        elif args.command == "list":
            page = client.json("GET", "requests/", params={"status": args.status} if args.status else None)
            rows = [{**r, "outcome": (r["summary"] or {}).get("outcome", "")} for r in page["results"]]
            emit(rows, ["id", "title", "status", "task", "team", "outcome"], args.format)
        elif args.command == "download":
            print(download(client, args.request, args.candidate, args.output))
        elif args.command == "cancel":
            print(client.json("POST", f"requests/{args.request}/cancel/")["status"])
    except CliError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
