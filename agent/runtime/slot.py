"""A model slot: fixed buffers a plugin keeps forever, with the model behind them swappable."""

from __future__ import annotations

import numpy as np

from agent.errors import ModelError
from agent.runtime.base import FastPath, FloatArray, Model


class ModelSlot:
    """What a plugin holds instead of a model: stable buffers, `run()`, and an atomic swap.

    The buffers outlive any one model, so a plugin may cache references to them in `setup`.
    `prepare` binds a new model to the same buffers off the loop thread; `activate` replaces the
    run target with one reference assignment, done by the loop between two ticks.
    """

    def __init__(self, model: Model) -> None:
        self.inputs: tuple[FloatArray, ...] = tuple(
            np.zeros(s.shape, np.float32) for s in model.inputs
        )
        self.outputs: tuple[FloatArray, ...] = tuple(
            np.zeros(s.shape, np.float32) for s in model.outputs
        )
        self.model = model
        self._fast: FastPath = model.bind(self.inputs, self.outputs)

    def run(self) -> None:
        """Invoke the active model over the slot's buffers."""
        # One indirection (~0.1 us) so a plugin that keeps a reference to `run` still sees swaps.
        self._fast.run()

    def check_compatible(self, model: Model) -> None:
        """Raise ModelError unless `model` has the same input and output shapes as this slot."""
        want_in = [b.shape for b in self.inputs]
        want_out = [b.shape for b in self.outputs]
        got_in = [tuple(s.shape) for s in model.inputs]
        got_out = [tuple(s.shape) for s in model.outputs]
        if got_in != want_in or got_out != want_out:
            raise ModelError(
                f"incompatible model: inputs {got_in} outputs {got_out}, "
                f"slot needs inputs {want_in} outputs {want_out}",
                path=model.path,
            )

    def prepare(self, model: Model) -> FastPath:
        """Bind `model` to this slot's buffers without making it active (off the loop thread)."""
        self.check_compatible(model)
        return model.bind(self.inputs, self.outputs)

    def activate(self, model: Model, fast: FastPath) -> Model:
        """Make a prepared model the one `run` invokes; return the model it replaced."""
        old = self.model
        self._fast = fast
        self.model = model
        return old
