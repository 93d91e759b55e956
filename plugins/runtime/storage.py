"""How a runtime's graph is stored: the graph file in the runtime's own format, its weights in safetensors.

Both runtimes read their weights from byte offsets into a file: ONNX external data (``location``,
``offset``, ``length`` per initializer) and OpenVINO IR's ``.bin`` (``offset``, ``size`` per ``Const``). A
safetensors file is a JSON header followed by the raw bytes of each tensor, so the graph is written to
point into ``model.safetensors``: ONNX Runtime runs ``model.onnx`` and OpenVINO reads
``openvino_model.xml`` with ``model.safetensors`` as its weights file, unchanged, while the directory keeps
the project's rules: weights only in safetensors (no ``.bin``, no pickle), counted by the same header
reader as every other model (``plugins.model_info``). Neither format holds code: custom operator libraries
and OpenVINO extensions are never registered when they are loaded.

``served_format`` is the save format both runtimes share around their graph: config.json, the graph and
the manifest that names the runtime, loaded back on the CPU without remote code. NumPy and the runtime
libraries are imported where they are used, so a runtime module can build its format at import time
without loading them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from plugins.artifacts import WEIGHTS, ModelLoadError
from plugins.formats import Format

if TYPE_CHECKING:
    import numpy as np

ONNX_GRAPH = "model.onnx"
OPENVINO_GRAPH = "openvino_model.xml"
#: Initializers smaller than this stay inside the ONNX graph (shape constants, scalars, scales).
INLINE_BYTES = 1024
#: What counts as a weight in the parameter count (not shapes, indices or masks).
WEIGHT_DTYPES = frozenset({"float32", "float16", "float64", "int8", "uint8"})
_OV_TYPES = {
    "f32": "float32",
    "f16": "float16",
    "f64": "float64",
    "i8": "int8",
    "u8": "uint8",
    "i16": "int16",
    "u16": "uint16",
    "i32": "int32",
    "u32": "uint32",
    "i64": "int64",
    "u64": "uint64",
    "boolean": "bool",
}


def _write_safetensors(tensors: dict[str, np.ndarray], path: Path) -> dict[str, int]:
    """Save ``tensors`` as safetensors; return each tensor's byte offset from the start of the file."""
    import numpy as np
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "np"})
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
    return {k: 8 + length + int(v["data_offsets"][0]) for k, v in header.items() if k != "__metadata__"}


# --- ONNX ---------------------------------------------------------------------------------------------------


def save_onnx(proto: Any, path: Path) -> None:
    """``proto`` as ``model.onnx`` whose large initializers are external data inside ``model.safetensors``."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.ModelProto()
    graph.CopyFrom(proto)
    moved: dict[str, np.ndarray] = {}
    for tensor in graph.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.nbytes >= INLINE_BYTES and array.dtype.name in WEIGHT_DTYPES | {"int32", "int64"}:
            moved[tensor.name] = array
    if len(moved) != len({t.name for t in graph.graph.initializer if t.name in moved}):
        raise ModelLoadError("the ONNX graph has two initializers of one name")
    offsets = _write_safetensors(moved, path / WEIGHTS) if moved else {}
    for tensor in graph.graph.initializer:
        if tensor.name not in moved:
            continue
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            tensor.ClearField(field)
        del tensor.external_data[:]
        for key, value in (
            ("location", WEIGHTS),
            ("offset", offsets[tensor.name]),
            ("length", moved[tensor.name].nbytes),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save_model(graph, str(path / ONNX_GRAPH))
    if not moved:  # the project's loader wants a safetensors file: a graph this small gets an empty one
        _write_safetensors({}, path / WEIGHTS)


def read_onnx(path: Path) -> Any:
    """The graph of ``path`` (without its external weights), refused when its weights are anywhere but in
    ``model.safetensors``."""
    import onnx

    graph_path = path / ONNX_GRAPH
    if not graph_path.is_file():
        raise ModelLoadError(f"{path.name} has no {ONNX_GRAPH}")
    try:
        proto = onnx.load_model(str(graph_path), load_external_data=False)
    except Exception as exc:  # a truncated or foreign file: protobuf raises its own errors
        raise ModelLoadError(
            f"{path.name}/{ONNX_GRAPH} is not an ONNX graph ({type(exc).__name__})"
        ) from None
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = {e.key: e.value for e in tensor.external_data}.get("location")
            if location != WEIGHTS:
                raise ModelLoadError(
                    f"{path.name}/{ONNX_GRAPH} reads weights from {location!r}; this tool only loads graphs "
                    f"whose weights are in {WEIGHTS}"
                )
    if any(op.domain not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft") for op in proto.opset_import):
        raise ModelLoadError(f"{path.name}/{ONNX_GRAPH} needs custom operators, which this tool never loads")
    return proto


def onnx_tensors(proto: Any, base: Path | None) -> Iterator[tuple[str, np.ndarray]]:
    """The weights of an ONNX graph (initializers of weight types, two elements or more)."""
    from onnx import numpy_helper

    for tensor in proto.graph.initializer:
        array = numpy_helper.to_array(tensor, base_dir=str(base) if base is not None else "")
        if array.dtype.name in WEIGHT_DTYPES and array.size > 1:
            yield tensor.name, array


# --- OpenVINO IR --------------------------------------------------------------------------------------------


def save_openvino(model: Any, path: Path) -> None:
    """``model`` as ``openvino_model.xml`` whose ``Const`` layers read their bytes from ``model.safetensors``."""
    import xml.etree.ElementTree as ElementTree

    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        tree = ElementTree.parse(Path(tmp) / "model.xml")
        blob = (Path(tmp) / "model.bin").read_bytes() if (Path(tmp) / "model.bin").is_file() else b""
    spans: dict[int, str] = {}
    tensors: dict[str, np.ndarray] = {}
    for layer in tree.getroot().iter("layer"):
        data = layer.find("data")
        if layer.get("type") != "Const" or data is None or int(data.get("size", "0")) == 0:
            continue
        offset, size = int(data.get("offset", "0")), int(data.get("size", "0"))
        if offset in spans:
            continue
        name = f"{layer.get('name') or 'const'}#{offset}"
        spans[offset] = name
        tensors[name] = _ov_array(blob[offset : offset + size], data)
    new_offsets = _write_safetensors(tensors, path / WEIGHTS)
    for layer in tree.getroot().iter("layer"):
        data = layer.find("data")
        if layer.get("type") == "Const" and data is not None and int(data.get("offset", "-1")) in spans:
            data.set("offset", str(new_offsets[spans[int(data.get("offset", "0"))]]))
    tree.write(path / OPENVINO_GRAPH, encoding="utf-8", xml_declaration=True)


def _ov_array(raw: bytes, data: Any) -> np.ndarray:
    """A constant's bytes as an array of its type and shape; packed types (int4, bf16 …) as bytes."""
    import numpy as np

    dtype = _OV_TYPES.get(data.get("element_type", ""))
    shape = tuple(int(d) for d in data.get("shape", "").split(",") if d.strip())
    if dtype is not None and int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize == len(raw):
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    return np.frombuffer(raw, dtype=np.uint8)


def read_openvino(path: Path) -> Any:
    """The OpenVINO model of ``path``, its weights read from ``model.safetensors``."""
    import openvino as ov

    if not (path / OPENVINO_GRAPH).is_file():
        raise ModelLoadError(f"{path.name} has no {OPENVINO_GRAPH}")
    try:
        return ov.Core().read_model(str(path / OPENVINO_GRAPH), str(path / WEIGHTS))
    except RuntimeError as exc:
        raise ModelLoadError(f"{path.name}/{OPENVINO_GRAPH} cannot be read: {str(exc)[:300]}") from None


def openvino_tensors(model: Any) -> Iterator[tuple[str, np.ndarray]]:
    """The weights of an OpenVINO model: constants of weight types (int4 unpacked), two elements or more."""
    import numpy as np

    for index, op in enumerate(model.get_ordered_ops()):
        if op.get_type_name() != "Constant":
            continue
        kind = op.get_element_type().get_type_name()
        shape = tuple(op.get_output_shape(0))
        count = int(np.prod(shape, dtype=np.int64))
        if count < 2:
            continue
        if kind in ("u4", "i4", "nf4"):
            packed = np.asarray(op.get_data()).view(np.uint8).reshape(-1)
            yield (
                f"{op.get_friendly_name()}#{index}",
                np.stack([packed & 15, packed >> 4], -1).reshape(-1)[:count],
            )
        elif kind in ("f32", "f16", "f64", "i8", "u8", "bf16"):
            yield f"{op.get_friendly_name()}#{index}", np.asarray(op.get_data())


# --- the save format ----------------------------------------------------------------------------------------


class Serve(Protocol):
    """Builds the served model back from a saved directory, its graph as ``read_graph`` returned it, and
    what the manifest and config.json say of it."""

    def __call__(
        self, path: Path, graph: Any, /, *, config: Any, task: str, kv: Any, details: dict[str, Any]
    ) -> Any: ...


def served_format(
    name: str,
    *,
    runtime: str,
    title: str,
    save_graph: Callable[[Any, Path], None],
    read_graph: Callable[[Path], Any],
    serve: Serve,
) -> Format:
    """The format ``name`` of a model that ``runtime`` (``title`` in messages) serves on the CPU.

    Saved: config.json, the served model's graph (``model.source``) by ``save_graph``, and a manifest of
    the runtime's name and the model's ``details`` (task, quantization, KV-cache layout …); the tokenizer
    and the model card are written by ``plugins.artifacts``. Loaded: the graph by ``read_graph``, which
    refuses weights outside ``model.safetensors``, the config without remote code, then ``serve``.
    """

    def detects(model: Any) -> bool:
        return type(model).__name__ == "ServedModel" and getattr(model, "runtime", None) == runtime

    def save(model: Any, path: Path) -> dict[str, Any]:
        model.config.save_pretrained(path)
        save_graph(model.source, path)
        return {"runtime": runtime, **model.details}

    def load(path: Path, task: str, manifest: dict[str, Any], device: str) -> Any:
        from transformers import AutoConfig

        from plugins.runtime.served import KvLayout

        if device != "cpu":
            raise ModelLoadError(f"{path.name} is served by {title} on the CPU, not on {device}")
        graph = read_graph(path)
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        kv = KvLayout(**manifest["kv"]) if manifest.get("kv") else None
        details = {k: v for k, v in manifest.items() if k not in ("format", "runtime")}
        return serve(path, graph, config=config, task=task, kv=kv, details=details)

    def dense_tensors(module: Any) -> list[tuple[int, Any]] | None:
        if not detects(module):
            return None
        from plugins.runtime.served import dense_tensors as served_tensors

        return served_tensors(module, runtime)

    return Format(name, detects=detects, save=save, load=load, dense_tensors=dense_tensors)
