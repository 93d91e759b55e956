"""Submit the request form many times at once against a running server, then check that every submission
was stored and queued; print the throughput and the submit latency. A load check that prints figures, not
a timed test.

    gunicorn planner.wsgi -w 4 -b 127.0.0.1:8001 &      # same DATABASE_URL and CELERY_BROKER_URL as below
    python manage.py load_submit --url http://127.0.0.1:8001 --requests 200 --concurrency 200

It logs in as a load-test user (created in the server's database, with the requester role), reads the form
as a browser would (its CSRF token and every field's default), and posts it with a small CSV labelled
with the model's labels. Only loopback URLs are accepted: this command must never load someone else's
server. No worker needs to run: it measures filing and queueing, and checks the broker holds each message.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import random
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from planner import services
from planner.forms import model_labels
from planner.models import PocRequest

MAX_REQUESTS = 5000
LOAD_PASSWORD = "load-test-" + "x" * 12  # a throwaway account on a scratch database


@dataclass
class Submission:
    seconds: float
    status: int
    location: str
    error: str = ""


class FormDefaults(HTMLParser):
    """The values a browser would submit for a form left as it is: text inputs, checked boxes, the selected
    (else first) option of each select, textareas; plus the CSRF token."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._select_value: str | None = None
        self._select_first: str | None = None
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((name, a.get("value", "on")))
            elif kind not in ("file", "submit", "button", "image", "reset"):
                self.fields.append((name, a.get("value", "")))
        elif tag == "select" and name:
            self._select, self._select_value, self._select_first = name, None, None
        elif tag == "option" and self._select is not None:
            value = a.get("value", "")
            if self._select_first is None:
                self._select_first = value
            if "selected" in a:
                self._select_value = value
        elif tag == "textarea" and name:
            self._textarea, self._text = name, ""

    def handle_data(self, data):
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "select" and self._select is not None:
            value = self._select_value if self._select_value is not None else self._select_first
            if value is not None:
                self.fields.append((self._select, value))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append((self._textarea, self._text.strip("\n")))
            self._textarea = None


class Client:
    """One HTTP/1.1 connection per call (as many browsers at once would open), with a fixed cookie header."""

    def __init__(self, base: str, timeout: float) -> None:
        parts = urlsplit(base)
        if not parts.hostname:  # _loopback refused such a URL already
            raise CommandError(f"{base}: give an http:// URL of a server on this machine.")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self.url = f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}/"

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            connection.request(method, path, body=body or None, headers={"Cookie": cookie, **(headers or {})})
            response = connection.getresponse()
            content = response.read()
            return response.status, response.getheader("Location", ""), response.msg, content
        finally:
            connection.close()

    def remember_cookies(self, message) -> None:
        for header in message.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]


def _multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in fields:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, filename, data in files:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        chunks.append(head.encode() + b"Content-Type: text/csv\r\n\r\n" + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _csrf_token(html: bytes) -> str:
    parser = FormDefaults()
    parser.feed(html.decode())
    token = dict(parser.fields).get("csrfmiddlewaretoken")
    if not token:
        raise CommandError("No CSRF token in the page: is this the planner?")
    return token


def _loopback(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise CommandError(f"{url}: give an http:// URL of a server on this machine.")
    host = parts.hostname
    if host != "localhost":
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
        raise CommandError(f"{url}: only a loopback address (127.0.0.1, ::1, localhost) may be loaded.")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


class Command(BaseCommand):
    help = "Submit the request form N times concurrently against a local server; check and print figures."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8001")
        parser.add_argument("--requests", type=int, default=200)
        parser.add_argument("--concurrency", type=int, default=None, help="Default: all at once.")
        parser.add_argument("--model-ref", default="tiny-bert", help="A model directory under MODELS_ROOT.")
        parser.add_argument("--timeout", type=float, default=120.0, help="Seconds per HTTP request.")
        parser.add_argument("--username", default="load-tester")

    def handle(self, *args, **opts):
        base = opts["url"].rstrip("/")
        _loopback(base)
        count = opts["requests"]
        if not 1 <= count <= MAX_REQUESTS:
            raise CommandError(f"--requests must be between 1 and {MAX_REQUESTS}.")
        concurrency = min(count, opts["concurrency"] or count)
        run = uuid.uuid4().hex[:8]
        self._user(opts["username"])
        client = Client(base, opts["timeout"])
        self._login(client, opts["username"])
        fields, csv = self._form(client, opts["model_ref"])

        start = threading.Barrier(concurrency)

        def submit(index: int) -> Submission:
            if index < concurrency:
                start.wait(timeout=opts["timeout"])  # the first wave leaves together
            body, content_type = _multipart(
                [(k, v) for k, v in fields if k != "title"] + [("title", f"load {run} #{index}")],
                [("dataset_upload", f"load-{index}.csv", csv)],
            )
            began = time.perf_counter()
            try:
                status, location, _msg, content = client.request(
                    "POST", "/requests/new/", body, {"Content-Type": content_type, "Referer": base + "/"}
                )
            except (OSError, http.client.HTTPException) as exc:
                return Submission(time.perf_counter() - began, 0, "", f"{type(exc).__name__}: {exc}")
            seconds = time.perf_counter() - began
            error = (
                "" if status == 302 and "/requests/" in location else content.decode(errors="replace")[:300]
            )
            return Submission(seconds, status, location, error)

        self.stdout.write(f"Submitting {count} forms to {base}/requests/new/ with {concurrency} at once…")
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            submissions = list(pool.map(submit, range(count)))
        wall = time.perf_counter() - began
        self._report(run, count, concurrency, submissions, wall)

    def _user(self, username: str) -> None:
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.set_password(LOAD_PASSWORD)
        user.save()
        requester = Group.objects.filter(name="requester").first()
        if requester is not None:
            user.groups.add(requester)
        services.team_for_user(user=user)

    def _login(self, client: Client, username: str) -> None:
        status, _, message, content = client.request("GET", "/accounts/login/")
        client.remember_cookies(message)
        body = urlencode(
            {"username": username, "password": LOAD_PASSWORD, "csrfmiddlewaretoken": _csrf_token(content)}
        ).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Referer": client.url}
        status, _, message, _ = client.request("POST", "/accounts/login/", body, headers)
        client.remember_cookies(message)
        if status != 302 or "sessionid" not in client.cookies:
            raise CommandError(f"Login as {username} failed (HTTP {status}).")

    def _form(self, client: Client, model_ref: str) -> tuple[list[tuple[str, str]], bytes]:
        status, _, _, content = client.request("GET", "/requests/new/")
        if status != 200:
            raise CommandError(f"The request form answered HTTP {status}.")
        parser = FormDefaults()
        parser.feed(content.decode())
        overrides = {"model_ref": model_ref, "dataset_ref": "upload"}
        fields = [(k, v) for k, v in parser.fields if k not in overrides] + list(overrides.items())
        config = json.loads((settings.MODELS_ROOT / model_ref / "config.json").read_text())
        return fields, _labelled_csv(sorted(model_labels(config)))

    def _report(
        self, run: str, count: int, concurrency: int, submissions: list[Submission], wall: float
    ) -> None:
        from workers.app import app
        from workers.broker import held_messages

        failed = [s for s in submissions if s.error]
        ok = [s.seconds for s in submissions if not s.error]
        rows = list(PocRequest.objects.filter(title__startswith=f"load {run} #").values_list("pk", "task_id"))
        redirected = {int(s.location.rstrip("/").rsplit("/", 1)[-1]) for s in submissions if not s.error}
        held = held_messages(app, services.POC_QUEUES)
        queued = [pk for pk, task_id in rows if task_id and (held is None or task_id in held)]
        lines = [
            f"submitted     {count} ({concurrency} at once), {len(failed)} errors",
            f"wall time     {wall:.2f} s",
            f"throughput    {len(ok) / wall:.1f} submissions/s",
        ]
        if ok:
            lines.append(
                "submit (ms)   p50 {:.0f}  p95 {:.0f}  p99 {:.0f}  max {:.0f}  mean {:.0f}".format(
                    *(1000 * _percentile(ok, q) for q in (0.5, 0.95, 0.99, 1.0)), 1000 * statistics.fmean(ok)
                )
            )
        lines += [
            f"stored        {len(rows)} of {count} (each the request the redirect named: "
            f"{'yes' if redirected == {pk for pk, _ in rows} else 'NO'})",
            f"queued        {len(queued)} of {count} with a task id whose message the broker holds"
            + (" (broker not listable: task ids only)" if held is None else ""),
        ]
        self.stdout.write("\n".join(lines))
        for submission in failed[:5]:
            self.stderr.write(f"HTTP {submission.status}: {submission.error}")
        if failed or len(rows) != count or len(queued) != count or redirected != {pk for pk, _ in rows}:
            raise CommandError("Not every submission was stored and queued.")


def _labelled_csv(labels: list[str], per_label: int = 20) -> bytes:
    rng = random.Random(0)
    words = ["the", "a", "of", "and", "in", "on", "with", "today", "very", "new", "big", "small"]
    rows = ["text,label"]
    for label in labels:
        rows += [" ".join(rng.choice(words) for _ in range(8)) + f",{label}" for _ in range(per_label)]
    return ("\n".join(rows) + "\n").encode()
