"""What every submission shares, on EMR and on EMR Serverless: the job's own arguments, the files
uploaded and where (one artifacts folder per build, the job config per run), and the API requests
as a dry run prints them and the submit command sends them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fruits_features.deploy.errors import StepNotCompletedError
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from fruits_features.deploy.package import Package


@dataclass(frozen=True)
class JobArguments:
    """The job's own command line, as ``jobs/extract_features.py`` takes it."""

    config_path: Path
    run_id: str
    input_uri: str | None = None
    output_uri: str | None = None
    overrides: tuple[str, ...] = ()

    def command_line(self) -> list[str]:
        """The job's arguments after ``--config``: ``--input``, ``--output``, ``--run-id``, ``--set``."""
        args: list[str] = []
        if self.input_uri is not None:
            args += ["--input", self.input_uri]
        if self.output_uri is not None:
            args += ["--output", self.output_uri]
        args += ["--run-id", self.run_id]
        for item in self.overrides:
            args += ["--set", item]
        return args


@dataclass(frozen=True)
class Upload:
    """One local file and the S3 object it becomes."""

    source: Path
    destination: str


@dataclass(frozen=True)
class ApiCall:
    """One API request (EMR or EMR Serverless): the operation's name, boto3's method and the parameters."""

    operation: str
    method: str
    parameters: dict[str, Any]


class HasArtifacts(Protocol):
    """Deploy settings with an artifacts folder: EMR's and EMR Serverless's."""

    @property
    def artifacts_uri(self) -> str: ...


def folder_uri(base: str, *parts: str) -> S3Uri:
    """``base`` joined with ``parts``, each a folder."""
    uri = S3Uri.parse(base)
    return S3Uri(uri.bucket, uri.prefix + "".join(part.strip("/") + "/" for part in parts))


def artifacts_prefix(settings: HasArtifacts, package: Package) -> S3Uri:
    """``<artifacts_uri><version>-<digest>/``: one folder per build, never overwritten by another."""
    return folder_uri(settings.artifacts_uri, package.tag)


def run_prefix(settings: HasArtifacts, run_id: str) -> S3Uri:
    """``<artifacts_uri>runs/<run id>/``: the job config this run was submitted with."""
    return folder_uri(settings.artifacts_uri, "runs", run_id)


def poll_until_ended(
    describe: Callable[[], dict[str, Any]],
    state_of: Callable[[dict[str, Any]], str],
    terminal: frozenset[str],
    what: str,
    *,
    poll_seconds: float,
    timeout_seconds: float,
    log: logging.Logger,
    where: str = "",
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Call ``describe`` every ``poll_seconds`` until ``state_of`` its answer is ``terminal``,
    logging each change of state as ``<what>: <state>``; returns the last answer. ``where`` (e.g.
    `` on cluster j-1``) completes ``what`` in the timeout's message.

    Raises:
        StepNotCompletedError: ``what`` has not ended after ``timeout_seconds`` (it goes on).
        AwsCallError: from ``describe``.
    """
    deadline = clock() + timeout_seconds
    last = None
    while True:
        answer = describe()
        state = state_of(answer)
        if state != last:
            log.info("%s: %s", what, state)
            last = state
        if state in terminal:
            return answer
        if clock() >= deadline:
            raise StepNotCompletedError(
                f"{what}{where} is still {state} after {timeout_seconds / 60:g} minutes; it goes on: "
                "see the AWS console, or submit again with --no-wait"
            )
        sleep(poll_seconds)
