"""Structural and numerical verification of a rewritten SavedModel against its original."""

from graphopt.validate.compare import OutputComparison, Tolerance
from graphopt.validate.report import CheckResult, OovProbe, SignatureRun, ValidationReport
from graphopt.validate.validation import validate_models

__all__ = [
    "CheckResult",
    "OovProbe",
    "OutputComparison",
    "SignatureRun",
    "Tolerance",
    "ValidationReport",
    "validate_models",
]
