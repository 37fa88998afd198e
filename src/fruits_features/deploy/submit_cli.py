"""The command line both submit commands share (``deploy.emr`` and ``deploy.serverless``): the job's
own arguments, the built package, the dry run and the wait; each command adds its settings file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from fruits_features.cli import check_run_id, new_run_id
from fruits_features.deploy.errors import ConfigError
from fruits_features.deploy.submission import JobArguments


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit code 2, as the job's own."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"command line: {message}")


def submit_parser(
    prog: str, description: str, what: str, settings: tuple[str, str, str], poll: str
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """``<prog> submit`` with the shared options; returns the parser and its ``submit`` sub-parser.

    Args:
        what: the ``submit`` command's one-line help.
        settings: the settings file's option, default path and help.
        poll: what ``--poll-seconds`` polls, e.g. ``DescribeStep interval (default: step.poll_seconds)``.
    """
    parser = OneLineParser(prog=prog, description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("submit", help=what)
    sub.add_argument("--config", required=True, type=Path, help="the job's config, e.g. conf/emr.yaml")
    option, default, help_text = settings
    sub.add_argument(option, type=Path, default=Path(default), help=f"{help_text} (default: {default})")
    sub.add_argument(
        "--dist", type=Path, default=Path("dist"), help="what make package built (default: dist)"
    )
    sub.add_argument("--input", help="the job's --input: s3://bucket/prefix/ of <Class>/<file> images")
    sub.add_argument("--output", help="the job's --output: s3://bucket/prefix/ to write <run-id>/ under")
    sub.add_argument("--run-id", help="the job's --run-id; default: UTC time + random suffix")
    sub.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="the job's --set: override one key of --config (repeatable)",
    )
    sub.add_argument(
        "--dry-run", action="store_true", help="print the uploads and API requests as JSON; call nothing"
    )
    sub.add_argument("--no-wait", action="store_true", help="return once the run is submitted")
    sub.add_argument("--poll-seconds", type=float, help=poll)
    sub.add_argument("--timeout-minutes", type=int, help="how long to wait (default: from the settings file)")
    return parser, sub


def job_arguments(args: argparse.Namespace) -> JobArguments:
    """The job's own command line from the parsed options (a new run id when none is given).

    Raises:
        ConfigError: an invalid ``--run-id``.
    """
    return JobArguments(
        config_path=args.config,
        run_id=check_run_id(args.run_id or new_run_id()),
        input_uri=args.input,
        output_uri=args.output,
        overrides=tuple(args.overrides),
    )
