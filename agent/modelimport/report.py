"""The table `edge-agent models import` prints: tensors, files, errors, metric and latency."""

from __future__ import annotations

from collections.abc import Sequence

from agent.modelimport.importer import ImportResult


def render(result: ImportResult) -> str:
    """The import summary as plain text tables."""
    m, q = result.manifest, result.quality
    lines = [f"imported {m.name} {m.version} -> {result.folder}  ({_plan(result)}, {q.task})"]
    rows: list[Sequence[object]] = [("input", t.name, t.shape, "float32") for t in m.inputs]
    rows += [("output", t.name, t.shape, "float32") for t in m.outputs]
    lines += ["", table(("tensor", "name", "shape", "dtype (fast path)"), rows)]
    sizes = [(k.removesuffix("_bytes").replace("_", " "), v) for k, v in m.quality.items()
             if k.endswith("_bytes")]  # fmt: skip
    files = [(f.path, f.format, f.io, f.size, f.sha256[:16]) for f in m.files]
    lines += ["", table(("file", "format", "io", "bytes", "sha256"), files)]
    lines += ["", table(("size", "bytes"), sizes)]
    errs = [(o.name, _f(o.max_abs), _f(o.mean_abs), _f(o.tolerance)) for o in q.outputs]
    lines += ["", table(("output", "max |int8-float|", "mean |int8-float|", "tolerance"), errs)]
    scores: list[Sequence[object]] = []
    if q.top1_agreement is not None:
        scores.append(("top-1 agreement int8 vs float", f"{q.top1_agreement:.4f}", ""))
    if q.metric is not None:
        scores.append((q.metric, _f(q.metric_float), _f(q.metric_model)))
    if scores:
        lines += ["", table((f"over {q.samples} samples", "float", "imported"), scores)]
    rate = m.quality.get("rate_hz")
    lat = [(x.label, _us(x.tight_p50), _us(x.tight_p99), _us(x.paced_p50), _us(x.paced_p99))
           for x in q.latency]  # fmt: skip
    headers = ("fast path (us)", "tight p50", "tight p99", f"@{rate:g} Hz p50", f"@{rate:g} Hz p99")
    lines += ["", table(headers, lat)]
    if result.warnings:
        lines += ["", *[f"note: {w}" for w in result.warnings]]
    return "\n".join(lines)


def _plan(result: ImportResult) -> str:
    if result.plan == "quantize":
        return f"quantized to int8 QDQ, {result.quantization.get('weights', '')} weights"
    return "int8, kept as is" if result.plan == "as_is" else "float, kept as is"


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _us(value: float) -> str:
    return f"{value:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns with a dashed rule under the headers."""
    cells = [[str(c) for c in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
