"""Analytic controllers wrapped as models, so they drive the robot through the real plugin.

The evaluation runs the expert and the naive baseline exactly where the policy runs: in the
plugin's model slot, behind the same sensors, action decoding, clipping and safety layer. Only
what computes the action differs. A controller returns the policy's output row (1, 73): heading
logits and scaled speed (see sim/robot/expert.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from agent.runtime.base import FastPath, FloatArray, Model, TensorSpec
from sim.robot.expert import ACTION_SIZE, OBS_SIZE, as_output, expert_action, naive_action

Controller = Callable[[FloatArray], npt.NDArray[np.float32]]


class _ControllerPath(FastPath):
    def __init__(
        self, fn: Controller, inputs: Sequence[FloatArray], outputs: Sequence[FloatArray]
    ) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self._fn = fn

    def run(self) -> None:
        """Compute the controller's output row for the observation in `inputs[0]`."""
        np.copyto(self.outputs[0], self._fn(self.inputs[0]))


class ControllerModel(Model):
    """A numpy controller (observation (1, 35) -> action row (1, 73)) behind Model.

    Evaluation and training only: it allocates on every run, which a shipped model must not.
    """

    def __init__(self, name: str, fn: Controller) -> None:
        self.name = name
        self.version = "0.0.0"
        self.backend = "onnx"  # Model's Literal has no "numpy"; nothing dispatches on it here
        self.accelerator = "cpu"
        self.path = f"<controller {name}>"
        self.inputs = (TensorSpec("input", (1, OBS_SIZE), "float32"),)
        self.outputs = (TensorSpec("action", (1, ACTION_SIZE), "float32"),)
        self._fn = fn

    def infer(self, *arrays: npt.ArrayLike) -> list[FloatArray]:
        """Run once on a (B, 35) batch."""
        return [np.asarray(self._fn(np.asarray(arrays[0], np.float32)), np.float32)]

    def bind(self, inputs: Sequence[FloatArray], outputs: Sequence[FloatArray]) -> FastPath:
        """Run the controller over these buffers."""
        return _ControllerPath(self._fn, inputs, outputs)

    def close(self) -> None:
        """Nothing to release."""


def expert_model(*, hold: int = 1) -> ControllerModel:
    """The analytic expert the policy was distilled from, re-planning every `hold`-th tick.

    It costs about 0.1 ms a call; `hold=5` re-plans at the lidar's 100 Hz under a 500 Hz loop
    and repeats its last action in between (evaluations use that to save time).
    """
    return ControllerModel("expert", Held(lambda obs: as_output(expert_action(obs)), hold))


class Held:
    """Calls a controller every `hold`-th time and repeats its outputs in between."""

    def __init__(self, fn: Controller, hold: int) -> None:
        self._fn = fn
        self._hold = max(1, hold)
        self._calls = 0
        self._last = np.zeros((1, ACTION_SIZE), np.float32)

    def __call__(self, obs: FloatArray) -> npt.NDArray[np.float32]:
        """The controller's output, fresh every `hold`-th call."""
        if self._calls % self._hold == 0:
            self._last = np.array(self._fn(obs), np.float32)
        self._calls += 1
        return self._last


def naive_model() -> ControllerModel:
    """The naive baseline: turn to the goal and drive straight at it."""
    return ControllerModel("baseline", lambda obs: as_output(naive_action(obs)))
