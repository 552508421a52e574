"""What a model file is: its format, whether it is quantized, its tensors and its operators.

ONNX files are read with the `onnx` package and rewritten in memory: a dynamic batch axis is
fixed to 1, outputs the agent cannot carry (non-float tensors such as a classifier's int64
`label`, or a ZipMap's sequence of maps) are dropped with a note, and the nodes only they used
are pruned. TFLite files are read with the LiteRT interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agent.errors import ModelError

Format = Literal["onnx", "tflite"]
_TFLITE_MAGIC = b"TFL3"
_QUANT_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
     "ConvInteger", "DynamicQuantizeLinear"}
)  # fmt: skip
_ONNX_FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class IoSpec:
    """One input or output: name, fixed shape, dtype in the file, known value range."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    value_range: tuple[float, float] | None = None


@dataclass
class ModelInfo:
    """What inspection found; `problems` non-empty means the file cannot be imported."""

    format: Format
    quantized: bool = False
    io: Literal["float32", "int8"] = "float32"
    inputs: list[IoSpec] = field(default_factory=list)
    outputs: list[IoSpec] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    source: Path = Path()
    onnx_model: Any = None
    """The rewritten onnx.ModelProto (ONNX only)."""


def sniff_format(path: Path) -> Format | None:
    """`tflite` by its magic bytes, `onnx` by suffix or by parsing; None when neither."""
    with path.open("rb") as f:
        head = f.read(8)
    if head[4:8] == _TFLITE_MAGIC:
        return "tflite"
    if path.suffix.lower() == ".tflite":
        return None
    return "onnx"


def inspect_model(path: Path) -> ModelInfo:
    """Read `path`; raise ModelError when it is no model file at all."""
    if not path.is_file():
        raise ModelError("no such file", path=str(path))
    fmt = sniff_format(path)
    if fmt is None:
        raise ModelError("not a TFLite flatbuffer (no TFL3 magic): corrupt or not a model",
                         path=str(path))  # fmt: skip
    info = inspect_tflite(path) if fmt == "tflite" else inspect_onnx(path)
    info.source = path
    return info


def inspect_onnx(path: Path) -> ModelInfo:
    """Read an ONNX file, fix its batch axis, drop outputs the agent cannot carry."""
    onnx = _onnx()
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        raise ModelError(f"not a valid ONNX model: {_first_line(exc)}", path=str(path)) from None
    info = ModelInfo("onnx", onnx_model=model)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    graph_inputs = [i for i in graph.input if i.name not in initializers]
    for value in graph_inputs:
        _fix_dims(value, "input", info)
        if value.type.tensor_type.elem_type != _ONNX_FLOAT:
            info.problems.append(
                f"input {value.name!r} is {_onnx_type(value)}: the agent feeds float32 tensors"
            )
    for value in list(graph.output):
        if not value.type.HasField("tensor_type") or value.type.tensor_type.elem_type != 1:
            info.notes.append(
                f"output {value.name!r} ({_onnx_type(value)}) dropped: the agent carries float "
                "tensors (a classifier's label is the argmax of its probabilities)"
            )
            graph.output.remove(value)
            continue
        _fix_dims(value, "output", info)
    if not graph.output:
        info.problems.append("no float32 output left: the agent needs at least one")
    _prune(graph)
    del graph.value_info[:]  # stale symbolic shapes; ORT and the quantizer infer them again
    info.ops = sorted({f"{n.domain}:{n.op_type}" if n.domain else n.op_type for n in graph.node})
    info.quantized = any(op in _QUANT_OPS for op in info.ops)
    ranges = _qdq_input_ranges(graph)
    info.inputs = [_onnx_spec(v, ranges.get(v.name)) for v in graph_inputs]
    info.outputs = [_onnx_spec(v, None) for v in graph.output]
    if not info.problems:
        _check_onnx_session(model, info)
    return info


def _fix_dims(value: Any, role: str, info: ModelInfo) -> None:
    dims = value.type.tensor_type.shape.dim
    for axis, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            continue
        label = dim.dim_param or "?"
        if axis == 0:
            dim.Clear()
            dim.dim_value = 1
            info.notes.append(f"{role} {value.name!r}: dynamic batch axis {label!r} fixed to 1")
        elif role == "input":
            info.problems.append(
                f"input {value.name!r} axis {axis} is dynamic ({label!r}): export it with a "
                "fixed size (only the batch axis may be dynamic)"
            )
        else:
            dim.Clear()  # filled from a real run once the inputs are fixed


def _prune(graph: Any) -> None:
    """Drop nodes none of whose outputs reach a graph output (ORT would run them anyway)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(reversed(keep))
    unused = [i for i in graph.initializer if i.name not in needed]
    for init in unused:
        graph.initializer.remove(init)


def _qdq_input_ranges(graph: Any) -> dict[str, tuple[float, float]]:
    """The float range the first QuantizeLinear of each graph input can represent."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    ranges: dict[str, tuple[float, float]] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        scale, zero = consts.get(node.input[1]), consts.get(node.input[2])
        if scale is None or zero is None or scale.size != 1:
            continue
        lo, hi = (-128, 127) if zero.dtype == np.int8 else (0, 255)
        s, z = float(scale.reshape(())), int(zero.reshape(()))
        ranges.setdefault(node.input[0], ((lo - z) * s, (hi - z) * s))
    return ranges


def _onnx_spec(value: Any, value_range: tuple[float, float] | None) -> IoSpec:
    dims = tuple(int(d.dim_value) for d in value.type.tensor_type.shape.dim)
    return IoSpec(value.name, dims, "float32", value_range)


def _check_onnx_session(model: Any, info: ModelInfo) -> None:
    """Load in ORT's CPU provider (names an unsupported operator) and fill output shapes."""
    import onnxruntime as ort

    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        feeds = {s.name: np.zeros(s.shape, np.float32) for s in info.inputs}
        results = session.run([o.name for o in info.outputs], feeds)
    except Exception as exc:
        info.problems.append(f"ONNX Runtime (CPU) cannot run it: {_first_line(exc)}")
        return
    for value, result in zip(model.graph.output, results, strict=True):
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for d in np.asarray(result).shape:
            dims.add().dim_value = int(d)
    info.outputs = [_onnx_spec(v, None) for v in model.graph.output]


def inspect_tflite(path: Path) -> ModelInfo:
    """Read a TFLite file with the LiteRT interpreter."""
    from agent.runtime.tflite import interpreter_module

    try:
        interp = interpreter_module().Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
    except ModelError:
        raise
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError naming the failing op
        raise ModelError(f"LiteRT cannot load it: {_first_line(exc)}", path=str(path)) from None
    info = ModelInfo("tflite")
    details = interp.get_tensor_details()
    info.quantized = any(np.dtype(d["dtype"]).name in ("int8", "uint8") for d in details)
    info.inputs = [_tflite_spec(d, "input", info) for d in interp.get_input_details()]
    info.outputs = [_tflite_spec(d, "output", info) for d in interp.get_output_details()]
    info.io = "int8" if any(s.dtype != "float32" for s in info.inputs + info.outputs) else "float32"
    info.ops = _tflite_ops(path)
    return info


def _tflite_ops(path: Path) -> list[str]:
    """The file's own operators: read without the default XNNPACK delegate, which would
    otherwise replace them by one DELEGATE node."""
    from agent.runtime.tflite import interpreter_module

    module = interpreter_module()
    resolver = getattr(
        getattr(module, "OpResolverType", None), "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None
    )
    kwargs = {} if resolver is None else {"experimental_op_resolver_type": resolver}
    try:
        interp = module.Interpreter(model_path=str(path), **kwargs)
        interp.allocate_tensors()
        details = interp._get_ops_details()
    except Exception:  # private API or an older LiteRT: the operator list stays unknown
        return []
    return sorted({str(op["op_name"]) for op in details})


def _tflite_spec(detail: dict[str, Any], role: str, info: ModelInfo) -> IoSpec:
    name = str(detail["name"])
    signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    for axis, d in enumerate(signature):
        if d < 0 and axis == 0:
            info.notes.append(f"{role} {name!r}: dynamic batch axis fixed to 1")
        elif d < 0:
            info.problems.append(f"{role} {name!r} axis {axis} is dynamic: convert it fixed")
    shape = tuple(max(1, int(d)) for d in detail["shape"])
    dtype = np.dtype(detail["dtype"]).name
    if dtype not in ("float32", "int8", "uint8"):
        info.problems.append(f"{role} {name!r} is {dtype}: the agent carries float32 or int8")
    scale, zero = detail["quantization"]
    value_range = None
    if dtype in ("int8", "uint8") and scale > 0:
        lo, hi = (-128, 127) if dtype == "int8" else (0, 255)
        value_range = ((lo - zero) * scale, (hi - zero) * scale)
    return IoSpec(name, shape, dtype, value_range)


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ModelError(
            "importing ONNX models needs the onnx package: pip install 'edge-agent[import]'"
        ) from None
    return onnx


def _onnx_type(value: Any) -> str:
    t = value.type
    if t.HasField("tensor_type"):
        import onnx

        return f"tensor({onnx.TensorProto.DataType.Name(t.tensor_type.elem_type).lower()})"
    return t.WhichOneof("value") or "unknown"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
