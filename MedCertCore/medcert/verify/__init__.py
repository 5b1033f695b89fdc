"""Replay verification with one verdict per check."""

from medcert.verify.replay import StoredMask, verify_record
from medcert.verify.report import CHECKS, CheckResult, VerificationReport

__all__ = ["CHECKS", "CheckResult", "StoredMask", "VerificationReport", "verify_record"]
