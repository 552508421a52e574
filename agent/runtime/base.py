"""The seam between the agent and an inference runtime: a loaded model and its fast path."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Backend = Literal["tflite", "onnx"]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output tensor as stored in the model file."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        """True when the tensor holds int8/uint8 values with an affine scale."""
        return self.dtype in ("int8", "uint8") and self.scale > 0.0


class FastPath(ABC):
    """Runs a model over caller-owned float32 buffers; `run()` allocates nothing."""

    inputs: tuple[FloatArray, ...]
    outputs: tuple[FloatArray, ...]

    @abstractmethod
    def run(self) -> None:
        """Read `inputs` (quantizing when the model is int8), invoke, fill `outputs`."""


class Model(ABC):
    """A loaded model on one backend and one accelerator."""

    name: str
    version: str
    backend: Backend
    accelerator: str
    path: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @abstractmethod
    def infer(self, *arrays: npt.ArrayLike) -> list[FloatArray]:
        """Run once on float (or raw int8) inputs and return float32 outputs; allocates."""

    def _check_arity(self, arrays: tuple[object, ...]) -> None:
        """Raise ModelError unless one array per input was given."""
        if len(arrays) != len(self.inputs):
            from agent.errors import ModelError

            raise ModelError(
                f"model takes {len(self.inputs)} inputs, got {len(arrays)}", path=self.path
            )

    @abstractmethod
    def bind(self, inputs: Sequence[FloatArray], outputs: Sequence[FloatArray]) -> FastPath:
        """Build a fast path over these float32 buffers (shapes as in the specs)."""

    def fast_path(self) -> FastPath:
        """Allocate float32 buffers matching the specs and bind a fast path to them."""
        ins = [np.zeros(s.shape, np.float32) for s in self.inputs]
        outs = [np.zeros(s.shape, np.float32) for s in self.outputs]
        return self.bind(ins, outs)

    @abstractmethod
    def close(self) -> None:
        """Release the interpreter or session."""

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
