"""Submit the job to Amazon EMR as a ``spark-submit`` step, and wait for it.

::

    python -m fruits_features.deploy.emr submit --config conf/emr.yaml \\
        [--cluster-config conf/emr-cluster.yaml] [--dist dist] [--cluster-id j-XXXXXXXXXXXXX] \\
        [--input s3://...] [--output s3://...] [--run-id ID] [--set section.key=value ...] \\
        [--dry-run] [--no-wait] [--poll-seconds S] [--timeout-minutes M]

1. validates both configs and the built ``dist/`` (``make package``) before any AWS call;
2. uploads ``dist/`` to ``<artifacts_uri><version>-<digest>/`` and the job config to
   ``<artifacts_uri>runs/<run id>/``;
3. creates a cluster (``RunJobFlow``, with the bootstrap action for the job's ``model.engine`` and
   the step) or, with ``--cluster-id``, adds the step to that cluster (``AddJobFlowSteps``);
4. polls ``DescribeStep`` until the step ends and reports its state, the output and the logs.

``--dry-run`` prints the uploads and the exact API requests as JSON, and calls nothing.

Exit codes: 0 the step completed; 1 it failed, was cancelled or interrupted, or the wait ran out;
2 bad configuration, arguments or package; 3 AWS refused a call or could not be reached.

Endpoints, region and credentials come from the standard AWS environment (``AWS_REGION``,
``AWS_ENDPOINT_URL_EMR``, ``AWS_ENDPOINT_URL_S3``, the default credential chain).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fruits_features.cli import configure_logging
from fruits_features.config_files import load_config
from fruits_features.deploy.errors import AwsCallError, ConfigError, StepNotCompletedError
from fruits_features.deploy.instances import check_instance
from fruits_features.deploy.package import load_package
from fruits_features.deploy.plan import TERMINAL_STEP_STATES, Plan, plan_submission
from fruits_features.deploy.security import create_security_configuration
from fruits_features.deploy.settings import load_settings
from fruits_features.deploy.submission import Upload, poll_until_ended
from fruits_features.deploy.submit_cli import job_arguments, submit_parser
from fruits_features.errors import FruitsFeaturesError
from fruits_features.io.s3 import describe_error, s3_client
from fruits_features.io.uri import S3Uri

log = logging.getLogger("fruits_features.deploy.emr")

# A cluster in one of these states takes no more steps.
_ENDED_CLUSTER_STATES = frozenset({"TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"})


class EmrClient(Protocol):
    """The part of boto3's EMR client the command uses."""

    def run_job_flow(self, **kwargs: Any) -> dict[str, Any]: ...

    def create_security_configuration(self, **kwargs: Any) -> dict[str, Any]: ...

    def add_job_flow_steps(self, **kwargs: Any) -> dict[str, Any]: ...

    def describe_cluster(self, **kwargs: Any) -> dict[str, Any]: ...

    def describe_step(self, **kwargs: Any) -> dict[str, Any]: ...

    def list_steps(self, **kwargs: Any) -> dict[str, Any]: ...


class S3Uploader(Protocol):
    """The part of boto3's S3 client the command uses."""

    def upload_file(self, Filename: str, Bucket: str, Key: str) -> None: ...  # noqa: N803


def emr_client() -> EmrClient:
    """A boto3 EMR client from the standard AWS environment, retrying throttled calls."""
    config = Config(retries={"mode": "standard", "max_attempts": 10})
    return cast(EmrClient, boto3.session.Session().client("emr", config=config))


@dataclass(frozen=True)
class StepOutcome:
    """How a step ended, and where to look."""

    cluster_id: str
    step_id: str
    state: str
    reason: str | None
    log_locations: tuple[str, ...]
    output_uri: str

    @property
    def completed(self) -> bool:
        """Whether the step ran to the end without error."""
        return self.state == "COMPLETED"

    def report(self) -> list[str]:
        """Human lines: state, reason, output and logs."""
        lines = [f"step {self.step_id} on cluster {self.cluster_id}: {self.state}"]
        if self.reason:
            lines.append(f"  reason   {self.reason}")
        if self.completed:
            lines.append(f"  output   {self.output_uri} (_SUCCESS marks a finished run)")
        for location in self.log_locations:
            lines.append(f"  logs     {location}")
        return lines


@contextmanager
def aws_call(action: str) -> Iterator[None]:
    """Turn an AWS failure inside the block into an :class:`AwsCallError` naming ``action``."""
    try:
        yield
    except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
        raise AwsCallError(f"{action}: {describe_error(exc)}") from exc


def upload(uploads: Sequence[Upload], s3: S3Uploader) -> None:
    """Upload every file of a plan.

    Raises:
        AwsCallError: naming the object that could not be written.
    """
    for item in uploads:
        target = S3Uri.parse(item.destination)
        with aws_call(f"cannot upload {item.source} to {item.destination}"):
            s3.upload_file(Filename=str(item.source), Bucket=target.bucket, Key=target.key)
    log.info("uploaded %d files", len(uploads))


def _s3_log_uri(log_uri: str | None) -> str | None:
    # EMR reports the log URI as it stores it, often with the s3n:// scheme of old Hadoop.
    if not log_uri:
        return None
    scheme, _, rest = log_uri.partition("://")
    return f"s3://{rest.rstrip('/')}/" if scheme in {"s3", "s3n", "s3a"} else log_uri


def log_locations(
    log_uri: str | None, cluster_id: str, step_id: str, log_file: str | None
) -> tuple[str, ...]:
    """Where a step's logs land: EMR's step folder and YARN's container logs (the driver's, in cluster mode).

    EMR copies logs to the cluster's log URI every few minutes; the failing log file, when
    ``DescribeStep`` names one, comes first.
    """
    locations: list[str] = []
    if log_file:
        locations.append(_s3_log_uri(log_file) or log_file)
    base = _s3_log_uri(log_uri)
    if base is None:
        locations.append(
            f"no log URI on cluster {cluster_id}: logs stay on its nodes (/var/log/hadoop/steps/)"
        )
    else:
        locations.append(f"{base}{cluster_id}/steps/{step_id}/ (stderr.gz: spark-submit's output)")
        locations.append(f"{base}{cluster_id}/containers/ (the driver's and executors' logs)")
    return tuple(locations)


def start(plan: Plan, emr: EmrClient) -> tuple[str, str, str | None]:
    """Make the plan's EMR calls.

    Returns:
        The cluster id, the step id and the cluster's log URI.

    Raises:
        AwsCallError: if a call is refused, or the existing cluster has ended.
    """
    if plan.cluster_id is None:
        security, call = plan.calls
        create_security_configuration(emr, security.parameters)
        with aws_call("RunJobFlow"):
            cluster_id = str(emr.run_job_flow(**call.parameters)["JobFlowId"])
        log.info("created cluster %s", cluster_id)
        with aws_call(f"ListSteps on {cluster_id}"):
            steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
        ids = [str(step["Id"]) for step in steps if step.get("Name") == plan.step_name]
        if len(ids) != 1:
            raise AwsCallError(
                f"cluster {cluster_id} lists {len(ids)} steps named {plan.step_name!r}, not one"
            )
        log_uri = call.parameters.get("LogUri")
        return cluster_id, ids[0], log_uri
    describe, add = plan.calls
    with aws_call(f"DescribeCluster {plan.cluster_id}"):
        cluster = emr.describe_cluster(**describe.parameters)["Cluster"]
    state = cluster.get("Status", {}).get("State")
    if state in _ENDED_CLUSTER_STATES:
        raise AwsCallError(f"cluster {plan.cluster_id} is {state}: it takes no more steps")
    with aws_call(f"AddJobFlowSteps on {plan.cluster_id}"):
        (step_id,) = emr.add_job_flow_steps(**add.parameters)["StepIds"]
    log.info("added step %s to cluster %s (%s)", step_id, plan.cluster_id, state)
    return plan.cluster_id, str(step_id), cluster.get("LogUri")


def wait_for_step(
    emr: EmrClient,
    cluster_id: str,
    step_id: str,
    poll_seconds: float,
    timeout_seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll ``DescribeStep`` until the step reaches a terminal state, logging each change.

    Returns:
        The step's last description (``DescribeStep``'s ``Step``).

    Raises:
        AwsCallError: if a call is refused.
        StepNotCompletedError: if the step has not ended after ``timeout_seconds``.
    """

    def describe() -> dict[str, Any]:
        with aws_call(f"DescribeStep {step_id} on {cluster_id}"):
            return dict(emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"])

    return poll_until_ended(
        describe,
        lambda step: str(step["Status"]["State"]),
        TERMINAL_STEP_STATES,
        f"step {step_id}",
        poll_seconds=poll_seconds,
        timeout_seconds=timeout_seconds,
        log=log,
        where=f" on cluster {cluster_id}",
        sleep=sleep,
        clock=clock,
    )


def outcome(
    emr: EmrClient, plan: Plan, cluster_id: str, step: dict[str, Any], log_uri: str | None
) -> StepOutcome:
    """Describe how the step ended: its reason, the cluster's reason when it ended too, the logs."""
    status = step["Status"]
    failure = status.get("FailureDetails") or {}
    reasons = [
        text
        for text in (
            failure.get("Reason"),
            failure.get("Message"),
            (status.get("StateChangeReason") or {}).get("Message"),
        )
        if text
    ]
    if status["State"] != "COMPLETED":
        # A bootstrap failure or a terminated cluster cancels the step: the cluster says why.
        try:
            cluster_status = emr.describe_cluster(ClusterId=cluster_id)["Cluster"].get("Status", {})
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not describe cluster %s: %s", cluster_id, describe_error(exc))
        else:
            if cluster_status.get("State") in _ENDED_CLUSTER_STATES:
                message = (cluster_status.get("StateChangeReason") or {}).get("Message")
                reasons.append(f"cluster {cluster_status['State']}" + (f": {message}" if message else ""))
    return StepOutcome(
        cluster_id=cluster_id,
        step_id=str(step["Id"]),
        state=str(status["State"]),
        reason="; ".join(dict.fromkeys(reasons)) or None,
        log_locations=log_locations(log_uri, cluster_id, str(step["Id"]), failure.get("LogFile")),
        output_uri=plan.output_uri,
    )


def submit(plan: Plan, emr: EmrClient, s3: S3Uploader, *, wait: bool = True) -> StepOutcome | None:
    """Carry out a plan: upload, create or add, and (with ``wait``) wait for the step.

    Returns:
        How the step ended, or ``None`` without ``wait``.

    Raises:
        AwsCallError: if AWS refuses a call.
        StepNotCompletedError: if the wait runs out.
    """
    upload(plan.uploads, s3)
    cluster_id, step_id, log_uri = start(plan, emr)
    log.info("run %s: output %s", plan.run_id, plan.output_uri)
    if not wait:
        for location in log_locations(log_uri, cluster_id, step_id, None):
            log.info("logs %s", location)
        return None
    step = wait_for_step(emr, cluster_id, step_id, plan.poll_seconds, plan.timeout_minutes * 60.0)
    return outcome(emr, plan, cluster_id, step, log_uri)


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser, sub = submit_parser(
        "python -m fruits_features.deploy.emr",
        __doc__.splitlines()[0],
        "run the job as an EMR step and wait for it",
        ("--cluster-config", "conf/emr-cluster.yaml", "cluster, bootstrap and step settings"),
        "DescribeStep interval (default: step.poll_seconds)",
    )
    sub.add_argument("--cluster-id", help="add the step to this running cluster instead of creating one")
    return parser


def make_plan(args: argparse.Namespace) -> Plan:
    """Validate the configs and the package, and plan the submission; no AWS call.

    Raises:
        ConfigError: for a bad config, argument or package.
    """
    settings = load_settings(args.cluster_config)
    job = load_config(args.config, input_uri=args.input, output_uri=args.output, overrides=args.overrides)
    package = load_package(args.dist)
    arguments = job_arguments(args)
    step = settings.step.model_copy(
        update={
            key: value
            for key, value in (("poll_seconds", args.poll_seconds), ("timeout_minutes", args.timeout_minutes))
            if value is not None
        }
    )
    if step.poll_seconds <= 0 or step.timeout_minutes < 1:
        raise ConfigError("command line: --poll-seconds must be > 0 and --timeout-minutes >= 1")
    settings = settings.model_copy(update={"step": step})
    if args.cluster_id is None:  # a new cluster: what its core nodes' CPU means for the engine
        core = settings.cluster.core.instance_type
        log.info("%s", check_instance(core, job.model.engine, packed=package.environment is not None))
    return plan_submission(settings, package, job, arguments, cluster_id=args.cluster_id)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    configure_logging()
    try:
        args = build_parser().parse_args(argv)
        plan = make_plan(args)
        if args.dry_run:
            sys.stdout.write(json.dumps(plan.to_json(), indent=2) + "\n")
            return 0
        result = submit(plan, emr_client(), s3_client(), wait=not args.no_wait)
    except FruitsFeaturesError as exc:
        log.error("%s", exc)
        return exc.exit_code
    if result is None:
        return 0
    for line in result.report():
        (log.info if result.completed else log.error)("%s", line)
    return 0 if result.completed else StepNotCompletedError.exit_code


if __name__ == "__main__":
    sys.exit(main())
