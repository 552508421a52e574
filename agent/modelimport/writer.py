"""The folder an import writes: files, golden vectors and a manifest.json the loader reads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.modelimport.calibration import GOLDEN_COUNT, Calibration
from agent.modelimport.inspection import IoSpec
from agent.modelimport.quality import Outputs, Quality
from agent.runtime.manifest import MANIFEST_FILE, Manifest


@dataclass(frozen=True)
class WrittenFile:
    """One model file in the folder and how the manifest lists it."""

    path: str
    format: str
    io: str


def file_entry(folder: Path, f: WrittenFile) -> dict[str, Any]:
    """The manifest's `files` entry for `f`, with its sha256 and size."""
    data = (folder / f.path).read_bytes()
    return {
        "format": f.format,
        "path": f.path,
        "io": f.io,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "accelerator": "cpu",
    }


def golden_vectors(calib: Calibration, outputs: Outputs, quality: Quality) -> list[dict[str, Any]]:
    """The first samples with the shipped model's outputs and one tolerance per output."""
    tolerances = [round(o.tolerance, 9) for o in quality.outputs]
    vectors = []
    for i in range(min(GOLDEN_COUNT, calib.count, outputs[0].shape[0])):
        vectors.append(
            {
                "inputs": [x.tolist() for x in calib.sample(i)],
                "outputs": [o[i].tolist() for o in outputs],
                "tolerance": max(tolerances),
                "tolerances": tolerances,
            }
        )
    return vectors


def tensor_infos(specs: list[IoSpec]) -> list[dict[str, Any]]:
    """Manifest `inputs`/`outputs`: callers of the fast path always see float32."""
    return [{"name": s.name, "shape": list(s.shape), "dtype": "float32"} for s in specs]


def quality_block(quality: Quality, sizes: dict[str, int], extra: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `quality` block: sizes, errors, metric and latency, rounded for reading."""
    block: dict[str, Any] = {**sizes, "task": quality.task, "samples": quality.samples, **extra}
    block["outputs"] = {
        o.name: {
            "max_abs_error": _r(o.max_abs),
            "mean_abs_error": _r(o.mean_abs),
            "tolerance": _r(o.tolerance),
        }
        for o in quality.outputs
    }
    if quality.top1_agreement is not None:
        block["top1_agreement"] = round(quality.top1_agreement, 4)
    if quality.metric is not None:
        block["metric"] = quality.metric
        block["float"] = _r(quality.metric_float)
        block["int8"] = _r(quality.metric_model)
    block["latency_us"] = {
        lat.label: {
            "tight_p50": round(lat.tight_p50, 2),
            "tight_p99": round(lat.tight_p99, 2),
            "paced_p50": round(lat.paced_p50, 2),
            "paced_p99": round(lat.paced_p99, 2),
        }
        for lat in quality.latency
    }
    return block


def write_manifest(folder: Path, raw: dict[str, Any]) -> Manifest:
    """Validate `raw` with the loader's own model, then write it; returns the parsed manifest."""
    manifest = Manifest.model_validate(raw)
    text = json.dumps(raw, indent=1, default=_json_default)
    (folder / MANIFEST_FILE).write_text(text + "\n")
    return manifest


def _r(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
