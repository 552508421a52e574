"""The `infer` and `models.list` commands' model access: named models only, loaded once, cached.

Models are found through the model store (shipped folder or the OTA-active version), never by a
path from the request. Runs on the command worker thread, off every plugin loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from agent.config.sections import AgentConfig
from agent.errors import CommandError, ModelError
from agent.sync.payloads import clean

if TYPE_CHECKING:
    from agent.runtime.base import Model

Format = Literal["tflite", "onnx"]


class ModelCache:
    """Loaded models by (name, format), least recently used evicted beyond `size`."""

    def __init__(self, config: AgentConfig, *, size: int = 4) -> None:
        self.config = config
        self._size = size
        self._models: OrderedDict[tuple[str, str | None], tuple[str, Model]] = OrderedDict()

    def _store(self) -> Any:
        from agent.runtime.folders import ModelStore

        return ModelStore(self.config.models_dir, self.config.state_dir)

    def get(self, name: str, fmt: Format | None) -> Model:
        """The model `name` (its active version), loading it on first use or after an update."""
        store = self._store()
        if name not in store.names():
            raise CommandError("not_found", f"no model {name!r} in {self.config.models_dir}")
        folder = str(store.resolve(name))
        key = (name, fmt)
        hit = self._models.get(key)
        if hit is not None and hit[0] == folder:
            self._models.move_to_end(key)
            return hit[1]
        from pathlib import Path

        from agent.runtime.loader import load_model

        model = load_model(Path(folder), self.config.runtime, fmt=fmt)
        if hit is not None:
            hit[1].close()
        self._models[key] = (folder, model)
        while len(self._models) > self._size:
            _, (_, old) = self._models.popitem(last=False)
            old.close()
        return model

    def infer(self, name: str, inputs: list[Any], fmt: Format | None) -> dict[str, Any]:
        """Run `name` once on `inputs` (one nested list per model input), shapes checked."""
        model = self.get(name, fmt)
        arrays = _inputs(model, inputs)
        t0 = time.perf_counter_ns()
        outputs = model.infer(*arrays)
        took_us = (time.perf_counter_ns() - t0) / 1000.0
        return {
            "model": model.name,
            "version": model.version,
            "backend": model.backend,
            "accelerator": model.accelerator,
            "latency_us": round(took_us, 1),
            "outputs": [clean(o) for o in outputs],
        }

    def list(self, active: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Every model in the store: name, version, task, formats, and the plugins using it."""
        store = self._store()
        out = []
        for name in sorted(store.names()):
            entry: dict[str, Any] = {"name": name}
            try:
                man = store.manifest(name)
                entry.update(
                    version=man.version,
                    task=man.task,
                    formats=sorted({f"{f.format}:{f.accelerator}:{f.io}" for f in man.files}),
                    inputs=[list(t.shape) for t in man.inputs],
                    outputs=[list(t.shape) for t in man.outputs],
                )
            except ModelError as exc:
                entry["error"] = str(exc)
            entry["used_by"] = {p: v for p, v in active.items() if v.get("name") == name}
            out.append(entry)
        return out

    def close(self) -> None:
        """Release every loaded model."""
        while self._models:
            _, (_, model) = self._models.popitem()
            model.close()


def _inputs(model: Model, inputs: list[Any]) -> list[np.ndarray[Any, Any]]:
    if len(inputs) != len(model.inputs):
        raise CommandError(
            "invalid_args",
            f"args.inputs: model {model.name!r} takes {len(model.inputs)} input(s), "
            f"got {len(inputs)}",
        )
    arrays = []
    for i, (spec, raw) in enumerate(zip(model.inputs, inputs, strict=True)):
        try:
            arr = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise CommandError("invalid_args", f"args.inputs.{i}: not numeric: {exc}") from None
        want = tuple(spec.shape)
        if arr.shape != want and want[:1] == (1,) and arr.shape == want[1:]:
            arr = arr.reshape(want)  # the batch dimension of a single sample may be left out
        if arr.shape != want:
            raise CommandError(
                "invalid_args",
                f"args.inputs.{i}: shape {list(arr.shape)}, model {model.name!r} expects "
                f"{list(want)}",
            )
        arrays.append(arr)
    return arrays
