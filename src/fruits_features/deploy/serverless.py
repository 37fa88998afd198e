"""Submit the job to EMR Serverless, and wait for it.

::

    python -m fruits_features.deploy.serverless submit --config conf/emr.yaml \\
        [--serverless-config conf/emr-serverless.yaml] [--dist dist] \\
        [--input s3://...] [--output s3://...] [--run-id ID] [--set section.key=value ...] \\
        [--dry-run] [--no-wait] [--poll-seconds S] [--timeout-minutes M]

1. validates both configs and the built ``dist/`` (``make package``, with its packed environment)
   before any AWS call;
2. uploads ``dist/`` to ``<artifacts_uri><version>-<digest>/`` and the job config to
   ``<artifacts_uri>runs/<run id>/``;
3. reuses the application with the configured name, release and architecture
   (``ListApplications``), or creates it (``CreateApplication``);
4. starts the job run (``StartJobRun``) with the execution role, and polls ``GetJobRun`` until it ends.

``--dry-run`` prints the uploads and the exact API requests as JSON, and calls nothing.

Exit codes: 0 the run succeeded; the job's own exit code when it failed with one (EMR Serverless
reports it in the run's state details), else 1, also when it was cancelled or the wait ran out;
2 bad configuration, arguments or package; 3 AWS refused a call or could not be reached.

Endpoints, region and credentials come from the standard AWS environment (``AWS_REGION``,
``AWS_ENDPOINT_URL_EMR_SERVERLESS``, ``AWS_ENDPOINT_URL_S3``, the default credential chain).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

import boto3
from botocore.config import Config

from fruits_features.cli import configure_logging
from fruits_features.config_files import load_config
from fruits_features.deploy.emr import S3Uploader, aws_call, upload
from fruits_features.deploy.errors import ConfigError, StepNotCompletedError
from fruits_features.deploy.package import load_package
from fruits_features.deploy.serverless_plan import TERMINAL_RUN_STATES, ServerlessPlan, plan_serverless
from fruits_features.deploy.serverless_settings import load_serverless_settings
from fruits_features.deploy.submission import poll_until_ended
from fruits_features.deploy.submit_cli import job_arguments, submit_parser
from fruits_features.errors import FruitsFeaturesError
from fruits_features.io.s3 import s3_client

log = logging.getLogger("fruits_features.deploy.serverless")

_EXIT_CODE = re.compile(r"ExitCode: (\d+)")


class ServerlessClient(Protocol):
    """The part of boto3's EMR Serverless client the command uses."""

    def list_applications(self, **kwargs: Any) -> dict[str, Any]: ...

    def create_application(self, **kwargs: Any) -> dict[str, Any]: ...

    def start_job_run(self, **kwargs: Any) -> dict[str, Any]: ...

    def get_job_run(self, **kwargs: Any) -> dict[str, Any]: ...


def serverless_client() -> ServerlessClient:
    """A boto3 EMR Serverless client from the standard AWS environment, retrying throttled calls."""
    config = Config(retries={"mode": "standard", "max_attempts": 10})
    return cast(ServerlessClient, boto3.session.Session().client("emr-serverless", config=config))


def find_or_create_application(plan: ServerlessPlan, client: ServerlessClient) -> str:
    """The id of an application with the plan's name, release and architecture, created if none.

    Raises:
        AwsCallError: if a call is refused.
    """
    wanted = plan.application
    with aws_call("ListApplications"):
        pages = [client.list_applications(**plan.find.parameters)]
        while pages[-1].get("nextToken"):
            pages.append(client.list_applications(**plan.find.parameters, nextToken=pages[-1]["nextToken"]))
    for page in pages:
        for app in page.get("applications", []):
            # AWS's ApplicationSummary names the architecture; an answer without one (moto's) is
            # taken as the default, X86_64.
            summary = {"architecture": "X86_64", **app}
            if all(summary.get(key) == value for key, value in wanted.items()):
                log.info("reusing application %s (%s, %s)", app["id"], app["name"], app["releaseLabel"])
                return str(app["id"])
    with aws_call("CreateApplication"):
        created = client.create_application(**plan.create.parameters)
    log.info(
        "created application %s (%s, %s)", created["applicationId"], wanted["name"], wanted["releaseLabel"]
    )
    return str(created["applicationId"])


def wait_for_run(
    client: ServerlessClient,
    application_id: str,
    run_id: str,
    poll_seconds: float,
    timeout_seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll ``GetJobRun`` until the run ends, logging each change of state.

    Raises:
        AwsCallError: if a call is refused.
        StepNotCompletedError: if the run has not ended after ``timeout_seconds``.
    """

    def describe() -> dict[str, Any]:
        with aws_call(f"GetJobRun {run_id}"):
            return dict(client.get_job_run(applicationId=application_id, jobRunId=run_id)["jobRun"])

    return poll_until_ended(
        describe,
        lambda run: str(run["state"]),
        TERMINAL_RUN_STATES,
        f"job run {run_id}",
        poll_seconds=poll_seconds,
        timeout_seconds=timeout_seconds,
        log=log,
        sleep=sleep,
        clock=clock,
    )


def exit_code(run: dict[str, Any]) -> int:
    """0 for SUCCESS; the job's exit code from the state details when they give one; else 1."""
    if run["state"] == "SUCCESS":
        return 0
    found = _EXIT_CODE.search(run.get("stateDetails") or "")
    code = int(found.group(1)) if found else 0
    return code or StepNotCompletedError.exit_code


def report(plan: ServerlessPlan, application_id: str, run: dict[str, Any], log_uri: str) -> list[str]:
    """Human lines: the state, its details, the output and the driver's logs."""
    lines = [f"job run {run['jobRunId']} on application {application_id}: {run['state']}"]
    if run.get("stateDetails"):
        lines.append(f"  reason   {run['stateDetails']}")
    if run["state"] == "SUCCESS":
        lines.append(f"  output   {plan.output_uri} (_SUCCESS marks a finished run)")
    driver = f"{log_uri}applications/{application_id}/jobs/{run['jobRunId']}/SPARK_DRIVER/"
    lines.append(f"  logs     {driver} (stderr.gz, stdout.gz: the driver's output)")
    return lines


def submit(plan: ServerlessPlan, client: ServerlessClient, s3: S3Uploader) -> int:
    """Carry out a plan; returns the exit code.

    Raises:
        AwsCallError: if AWS refuses a call.
        StepNotCompletedError: if the wait runs out.
    """
    upload(plan.uploads, s3)
    application_id = find_or_create_application(plan, client)
    parameters = {**plan.start.parameters, "applicationId": application_id}
    with aws_call("StartJobRun"):
        run_id = str(client.start_job_run(**parameters)["jobRunId"])
    log.info("started job run %s on application %s: output %s", run_id, application_id, plan.output_uri)
    log_uri = parameters["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"][
        "logUri"
    ]
    if not plan.wait:
        return 0
    run = wait_for_run(client, application_id, run_id, plan.poll_seconds, plan.timeout_minutes * 60.0)
    code = exit_code(run)
    for line in report(plan, application_id, run, log_uri):
        (log.info if code == 0 else log.error)("%s", line)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser, _ = submit_parser(
        "python -m fruits_features.deploy.serverless",
        __doc__.splitlines()[0],
        "run the job on EMR Serverless and wait for it",
        ("--serverless-config", "conf/emr-serverless.yaml", "application and job run settings"),
        "GetJobRun interval (default: run.poll_seconds)",
    )
    return parser


def make_plan(args: argparse.Namespace) -> ServerlessPlan:
    """Validate the configs and the package, and plan the submission; no AWS call.

    Raises:
        ConfigError, PackageError: for a bad config, argument or package.
    """
    settings = load_serverless_settings(args.serverless_config)
    job = load_config(args.config, input_uri=args.input, output_uri=args.output, overrides=args.overrides)
    updates = {
        key: value
        for key, value in (("poll_seconds", args.poll_seconds), ("timeout_minutes", args.timeout_minutes))
        if value is not None
    }
    if (updates.get("poll_seconds", 1) <= 0) or updates.get("timeout_minutes", 5) < 5:
        raise ConfigError("command line: --poll-seconds must be > 0 and --timeout-minutes >= 5")
    settings = settings.model_copy(update={"run": settings.run.model_copy(update=updates)})
    arguments = job_arguments(args)
    return plan_serverless(settings, load_package(args.dist), job, arguments, wait=not args.no_wait)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    configure_logging()
    try:
        args = build_parser().parse_args(argv)
        plan = make_plan(args)
        if args.dry_run:
            sys.stdout.write(json.dumps(plan.to_json(), indent=2) + "\n")
            return 0
        return submit(plan, serverless_client(), s3_client())
    except FruitsFeaturesError as exc:
        log.error("%s", exc)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
