"""A filing through the API, validated by the request form itself (planner.forms.PocRequestForm), so the
rules live once: the API's body becomes what a browser would post, the form's errors the API's."""

from __future__ import annotations

import json
from typing import Any

from rest_framework import exceptions

from planner.forms import DEFAULTS
from planner.models import HardwareProfile
from plugins import registry

# Fields that hold lists or objects: in a multipart body (an upload) they come as JSON text.
STRUCTURED = ("candidates", "pipelines", "params")
FILES = ("dataset_upload", "model_archive")
_RESERVED = set("(),→>\n\r")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _structured(payload: Any, name: str) -> Any:
    if hasattr(payload, "getlist") and name == "candidates" and len(payload.getlist(name)) > 1:
        return payload.getlist(name)
    value = payload.get(name)
    if isinstance(value, str) and name != "candidates":
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise exceptions.ValidationError({name: [f"Send {name} as JSON ({exc.msg})."]}) from None
    if isinstance(value, str):
        return json.loads(value) if value.startswith("[") else [value]
    return value


def _pipeline_line(steps: Any) -> str:
    """A structured pipeline as the form's typed line: technique(name=value, …) → …"""
    if not isinstance(steps, list) or not steps:
        raise exceptions.ValidationError({"pipelines": ["Each pipeline is a non-empty list of steps."]})
    parts = []
    for step in steps:
        if isinstance(step, str):
            step = {"technique": step}
        if not isinstance(step, dict) or not isinstance(step.get("technique"), str):
            raise exceptions.ValidationError(
                {"pipelines": ['Write a step as {"technique": "quantize.dynamic-int8", "params": {…}}.']}
            )
        params = step.get("params") or {}
        if not isinstance(params, dict):
            raise exceptions.ValidationError(
                {"pipelines": [f"{step['technique']}: params must be an object."]}
            )
        pairs = [f"{key}={_text(value)}" for key, value in params.items()]
        if any(_RESERVED & set(pair) for pair in pairs) or _RESERVED & set(step["technique"]):
            raise exceptions.ValidationError(
                {
                    "pipelines": [
                        f"{step['technique']}: names and values may not contain ( ) , → > or newlines."
                    ]
                }
            )
        parts.append(f"{step['technique']}({', '.join(pairs)})" if pairs else step["technique"])
    return " → ".join(parts)


def form_data(payload: Any) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The form's data and files for an API body (JSON or multipart), and whether it named pipelines."""
    data: dict[str, Any] = {name: _text(value) for name, value in DEFAULTS.items() if value is not None}
    for name, cls in registry.techniques().items():  # what an untouched form posts
        for param in cls.params:
            if param.default is not None:
                data[f"param:{name}:{param.name}"] = _text(param.default)
    files = {name: payload[name] for name in FILES if hasattr(payload.get(name), "read")}
    for name in payload:
        if name in FILES or name in STRUCTURED:
            continue
        value = payload.get(name)
        if value is not None:
            data[name] = _text(value)
    if "currency" not in payload:
        hardware = (
            HardwareProfile.objects.filter(pk=data["hardware"]).first()
            if str(data.get("hardware", "")).isdigit()
            else None
        )
        if hardware is not None:
            data["currency"] = hardware.currency
    candidates = _structured(payload, "candidates")
    data["candidates"] = [str(c) for c in candidates] if isinstance(candidates, list) else []
    params = _structured(payload, "params") or {}
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise exceptions.ValidationError({"params": ['Write params as {"technique": {"name": value}}.']})
    for technique, values in params.items():
        for key, value in values.items():
            data[f"param:{technique}:{key}"] = _text(value)
    pipelines = _structured(payload, "pipelines") or []
    if not isinstance(pipelines, list):
        raise exceptions.ValidationError({"pipelines": ["Send a list of pipelines."]})
    lines = [_pipeline_line(steps) for steps in pipelines]
    if lines:
        data["custom_pipelines"] = "\n".join(filter(None, [data.get("custom_pipelines", ""), *lines]))
    return data, files, bool(lines)


def form_errors(form: Any, *, pipelines: bool) -> exceptions.ValidationError:
    """The form's errors under the API's field names."""
    out: dict[str, list[str]] = {}
    for name, messages in form.errors.items():
        if name == "__all__":
            name = "non_field_errors"
        elif name.startswith("param:"):
            name = "params." + ".".join(name.split(":")[1:])
        elif name == "custom_pipelines" and pipelines:
            name = "pipelines"
        out.setdefault(name, []).extend(str(m) for m in messages)
    return exceptions.ValidationError(out)
