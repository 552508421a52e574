"""Which operators the configured accelerator cannot run, as far as can be known off the board.

- cpu / auto: ONNX Runtime's CPU provider or LiteRT loaded the file during inspection, which fails
  naming any operator it lacks; nothing more to check.
- coral: the Edge TPU runs only .tflite files, and only the TFLite builtin operators the Edge TPU
  compiler documents (the list below); anything else is named and will run on the CPU (after
  `edgetpu_compiler`, which is not run here).
- npu with ONNX Runtime providers: when the provider is in this ORT build, a session with CPU
  fallback disabled names the nodes it cannot take; when it is not, operators outside the
  default ONNX domain (ai.onnx.ml, custom) are named, as NPU providers do not implement them.
- npu with a TFLite delegate: what a vendor delegate takes is known only to the delegate on the
  board; that is said, not guessed.

Findings are warnings (the agent falls back to CPU) unless `runtime.strict` is set.
"""

from __future__ import annotations

from agent.config.runtime import NpuSettings
from agent.config.sections import RuntimeConfig
from agent.modelimport.inspection import ModelInfo

# TFLite builtin operators the Edge TPU compiler maps to the TPU (int8 only), per Coral's docs.
EDGETPU_OPS = frozenset(
    {"ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
     "EXPAND_DIMS", "FULLY_CONNECTED", "GATHER", "HARD_SWISH", "L2_NORMALIZATION", "LOGISTIC",
     "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU",
     "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
     "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX",
     "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM",
     "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "UNPACK"}
)  # fmt: skip


def accelerator_findings(info: ModelInfo, runtime: RuntimeConfig) -> list[str]:
    """One line per operator (group) the configured accelerator cannot run."""
    kind = runtime.accelerator
    if kind in ("cpu", "auto"):
        return []
    if kind == "coral":
        return _coral(info)
    if not isinstance(runtime, NpuSettings):
        return []
    if info.format == "onnx":
        return _onnx_npu(info, runtime)
    if not runtime.npu_delegate:
        return ["npu: no runtime.npu_delegate configured; this model runs on the CPU"]
    return [
        f"npu: whether {runtime.npu_delegate} takes every operator "
        f"({', '.join(info.ops) or 'unknown'}) is known only on the board: run "
        "`edge-agent models info NAME --config BOARD.toml` there"
    ]


def _coral(info: ModelInfo) -> list[str]:
    if info.format != "tflite":
        return ["coral: the Edge TPU runs .tflite files only; this ONNX model runs on the CPU"]
    found = []
    if not info.quantized:
        found.append("coral: the Edge TPU runs int8 models only; this float model runs on CPU")
    if info.ops:
        outside = [op for op in info.ops if op not in EDGETPU_OPS]
        if outside:
            found.append(f"coral: operator(s) the Edge TPU cannot run: {', '.join(outside)}")
    found.append("coral: the file also needs edgetpu_compiler (a *_edgetpu.tflite variant)")
    return found


def _onnx_npu(info: ModelInfo, runtime: NpuSettings) -> list[str]:
    from agent.runtime.accelerators import onnx_providers

    if not runtime.onnx_providers:
        return ["npu: no runtime.onnx_providers configured; this model runs on the CPU"]
    present, _ = onnx_providers(runtime.onnx_providers)
    if present and info.onnx_model is not None:
        return _provider_session(info, present[0])
    foreign = [op for op in info.ops if ":" in op]
    if not foreign:
        return [
            f"npu: {', '.join(runtime.onnx_providers)} not in this ONNX Runtime build; every "
            "operator is in the default ONNX domain, checked fully only on the board"
        ]
    return [f"npu: operator(s) outside the default ONNX domain run on CPU: {', '.join(foreign)}"]


def _provider_session(info: ModelInfo, provider: str) -> list[str]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        ort.InferenceSession(info.onnx_model.SerializeToString(), opts, providers=[provider])
    except Exception as exc:  # the provider names the nodes it would leave to the CPU
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return [f"npu: {provider} cannot run every node: {line}"]
    return []
