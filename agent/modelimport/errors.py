"""The one error of an import: every problem found, so a user fixes them all in one pass."""

from __future__ import annotations

from agent.errors import ModelError


class ImportProblems(ModelError):
    """An import was refused; `problems` lists each reason, one line a problem."""

    def __init__(self, problems: list[str], *, path: str | None = None) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems), path=path)
