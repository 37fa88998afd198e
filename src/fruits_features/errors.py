"""The job's exceptions, each mapped to a process exit code by the entry point."""

from __future__ import annotations


class FruitsFeaturesError(Exception):
    """Base class: a problem the job recognises and can explain in one line."""

    exit_code = 1


class ConfigError(FruitsFeaturesError):
    """The configuration or the command line is invalid (exit code 2)."""

    exit_code = 2


class InputError(FruitsFeaturesError):
    """The input cannot be read: bad URI, missing bucket, access denied, no images (exit code 3)."""

    exit_code = 3


class WeightsUnavailableError(FruitsFeaturesError):
    """The model weights named by ``model.weights`` cannot be had (exit code 3)."""

    exit_code = 3


class OutputError(FruitsFeaturesError):
    """The output location cannot be written or already holds a run (exit code 4)."""

    exit_code = 4


class PipelineError(FruitsFeaturesError):
    """A stage failed in a way that leaves no trustworthy result (exit code 1)."""

    exit_code = 1


class TooManyRejectsError(FruitsFeaturesError):
    """More images were rejected than ``max_rejected_fraction`` allows (exit code 5)."""

    exit_code = 5


class InventoryError(ConfigError):
    """An S3 Inventory report or a key list is malformed: not what ``input.listing`` says (exit code 2)."""
