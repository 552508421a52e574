"""Event rules over model outputs: plain state machines fed one value per model run."""

from __future__ import annotations

from agent.plugin.channel import OutputChannel


class ClassChange:
    """Emit when a new top class, at `min_probability` or more, has held for `hold_ns`."""

    def __init__(self, event: str, output: str, labels: list[str]) -> None:
        self.event = event
        self.output = output
        self.labels = labels
        self.current = -1
        self._pending = -1
        self._since = 0
        self.configure(0.6, 0)

    def configure(self, min_probability: float, hold_ns: int) -> None:
        """New limits; the current and pending classes stay."""
        self.min_probability = min_probability
        self.hold_ns = hold_ns

    def feed(self, now_ns: int, top: int, probability: float, out: OutputChannel) -> None:
        """One model run's top class and its probability."""
        if probability < self.min_probability or top == self.current:
            self._pending = -1
            return
        if top != self._pending:
            self._pending = top
            self._since = now_ns
        if now_ns - self._since >= self.hold_ns:
            previous = self.labels[self.current] if self.current >= 0 else None
            self.current = top
            self._pending = -1
            out.event(
                now_ns, self.event, probability, output=self.output,
                label=self.labels[top], previous=previous,
            )  # fmt: skip


class Threshold:
    """Emit when a value reaches `above`, then once more when it falls to `clear`."""

    def __init__(self, event: str, output: str) -> None:
        self.event = event
        self.output = output
        self.active = False
        self.configure(1.0, 0.0)

    def configure(self, above: float, clear: float) -> None:
        """New levels; whether the rule is raised stays."""
        self.above = above
        self.clear = clear

    def feed(self, now_ns: int, value: float, out: OutputChannel) -> None:
        """One model run's value."""
        if not self.active and value >= self.above:
            self.active = True
            out.event(now_ns, self.event, value, output=self.output, state="raised")
        elif self.active and value <= self.clear:
            self.active = False
            out.event(now_ns, self.event, value, output=self.output, state="cleared")
