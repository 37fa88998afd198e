"""The submit command's exceptions; each maps to the command's exit code.

Exit codes: 0 the step completed; 1 the step failed, was cancelled or interrupted, or is still not
finished after the wait limit; 2 bad configuration, arguments or package (:class:`ConfigError`);
3 AWS refused or could not be reached (:class:`AwsCallError`).
"""

from __future__ import annotations

from fruits_features.errors import ConfigError, FruitsFeaturesError

__all__ = ["AwsCallError", "ConfigError", "PackageError", "StepNotCompletedError"]


class PackageError(ConfigError):
    """``dist/`` is missing or incomplete: ``make package`` has not been run (exit code 2)."""


class AwsCallError(FruitsFeaturesError):
    """An S3 upload or an EMR call was refused or could not be made (exit code 3)."""

    exit_code = 3


class StepNotCompletedError(FruitsFeaturesError):
    """The step ended in FAILED, CANCELLED or INTERRUPTED, or the wait ran out (exit code 1)."""

    exit_code = 1
