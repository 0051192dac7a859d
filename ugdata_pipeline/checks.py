"""The outcome of one invariant check, shared by every stage's checks and by the assets that report them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """Result of one invariant: whether it holds, what was observed, what was expected, and examples."""

    passed: bool
    observed: float | int
    expected: str
    examples: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, object]:
        out: dict[str, object] = {"observed": self.observed, "expected": self.expected}
        if self.examples:
            out["examples"] = ", ".join(self.examples[:5])
        return out
