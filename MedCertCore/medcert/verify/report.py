"""Verification report: one result per check, an overall verdict, JSON and a human table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "skipped"]
Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]

CHECKS = ("signature", "evidence", "input_hash", "weights_hash", "trajectory", "final_logits", "output_record",
          "carrier")
# Skipped when no stored mask / no second carrier is at hand, without making the verdict inconclusive.
OPTIONAL = ("output_record", "carrier")
EXIT_CODES = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 2}


@dataclass
class CheckResult:
    """``code`` is a stable machine-readable reason (e.g. ``signingCredential.untrusted``)."""

    status: Status
    code: str
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "reason": self.reason, "figures": self.figures}


@dataclass
class VerificationReport:
    checks: dict[str, CheckResult]
    trace_id: str | None = None
    note: str = ""
    differences: Any = None  # labelmap [i,j,k] of voxels where the stored mask differs from the replay
    layer_deviations: list[tuple[str, float, float]] = field(default_factory=list)  # (layer, deviation, tolerance)

    @property
    def verdict(self) -> Verdict:
        statuses = {n: c.status for n, c in self.checks.items()}
        if any(s == "fail" for s in statuses.values()):
            return "FAIL"
        if any(statuses.get(n, "skipped") == "skipped" for n in CHECKS if n not in OPTIONAL):
            return "INCONCLUSIVE"
        return "PASS"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "trace_id": self.trace_id, "note": self.note,
                "checks": {n: self.checks[n].to_json() for n in CHECKS if n in self.checks}}

    def render(self) -> str:
        """Human-readable table."""
        rows = [f"MedCert verification of trace {self.trace_id or '-'}: {self.verdict}"]
        if self.note:
            rows.append(f"  note: {self.note}")
        width = max(len(n) for n in CHECKS)
        for n in CHECKS:
            c = self.checks.get(n)
            if c is None:
                continue
            rows.append(f"  {n:<{width}}  {c.status.upper():<7}  {c.reason}")
        return "\n".join(rows)


def skipped(code: str, reason: str) -> CheckResult:
    return CheckResult("skipped", code, reason)


def all_skipped(reason: str, code: str = "general.error") -> dict[str, CheckResult]:
    return {n: skipped(code, reason) for n in CHECKS if n not in OPTIONAL}
