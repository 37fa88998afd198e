"""Helpers for the deploy tests: a built dist/, cluster settings aimed at test buckets, moto's EMR backend."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from fruits_features.deploy.package import SUMS, Package, build_package, load_package

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"


def build_dist(target: Path) -> Package:
    """``make package`` into ``target``."""
    return build_package(ROOT, target)


def with_environment(package: Package, folder: Path, engine: str) -> Package:
    """A copy of ``package`` holding a stand-in ``environment-<engine>.tar.gz`` (a venv's layout,
    no libraries), listed in SHA256SUMS: what the plan and the bootstrap do with one, without the
    minute that packing a real one takes (tests/test_cluster.py runs a real one)."""
    target = folder / "dist"
    shutil.copytree(package.dist, target)
    archive = target / f"environment-{engine}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        body = b"home = /usr/bin\n"
        info = tarfile.TarInfo("pyvenv.cfg")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    with (target / SUMS).open("a") as sums:
        sums.write(f"{digest}  {archive.name}\n")
    return load_package(target)


def cluster_settings_file(folder: Path, bucket: str, **cluster: Any) -> Path:
    """conf/emr-cluster.yaml with its artifacts and logs in ``bucket`` and ``cluster`` keys replaced."""
    data = yaml.safe_load((ROOT / "conf" / "emr-cluster.yaml").read_text())
    data["artifacts_uri"] = f"s3://{bucket}/artifacts/"
    data["cluster"]["log_uri"] = f"s3://{bucket}/emr-logs/"
    data["cluster"].update(cluster)
    path = folder / "emr-cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def emr_backend() -> Any:
    """moto's in-process EMR state, which its server in this process answers from."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.emr.models import emr_backends

    return emr_backends[DEFAULT_ACCOUNT_ID][REGION]


class StepFinisher(threading.Thread):
    """Ends a step in moto the way EMR would: once the step named ``name`` exists and the submitter
    has described it (seen it RUNNING) at least once, its state becomes ``state`` with ``reason``,
    ``after`` seconds later. Waiting for the submitter's DescribeStep, not a fixed time, keeps the
    test independent of how fast the machine runs it.

    moto never moves a step past RUNNING by itself; this is the cluster's side of the run.
    """

    def __init__(
        self,
        name: str,
        state: str,
        reason: str | None = None,
        after: float = 0.1,
        cluster_end: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.name = name
        self.state = state
        self.reason = reason
        self.after = after
        self.cluster_end = cluster_end  # (state, reason) the cluster ends in first, if any
        self.step_id: str | None = None
        self.described: set[str] = set()  # step ids the submitter has described

    def run(self) -> None:
        from moto.core.utils import utcnow

        backend = emr_backend()
        describe = backend.describe_step

        def counting(cluster_id: str, step_id: str) -> Any:
            step = describe(cluster_id, step_id)
            self.described.add(step_id)  # after the state was read: the submitter saw it RUNNING
            return step

        backend.describe_step = counting  # an instance attribute: the class's method is untouched
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                for cluster in list(backend.clusters.values()):
                    for step in list(cluster.steps):
                        if step.name == self.name and step.id in self.described:
                            time.sleep(self.after)
                            if self.cluster_end is not None:
                                cluster.last_state_change_reason = self.cluster_end[1]
                                cluster.state = self.cluster_end[0]
                            step.last_state_change_reason = self.reason
                            step.end_date_time = utcnow()
                            step.state = self.state
                            self.step_id = step.id
                            return
                time.sleep(0.02)
        finally:
            del backend.describe_step


def recorded_emr_requests(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The EMR operations and JSON bodies moto's recorder wrote to ``path``, in order."""
    calls = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        target = {k.lower(): v for k, v in entry["headers"].items()}.get("x-amz-target", "")
        if not target.startswith("ElasticMapReduce."):
            continue
        body = base64.b64decode(entry["body"]) if entry.get("body_encoded") else entry["body"].encode()
        calls.append((target.split(".", 1)[1], json.loads(body)))
    return calls
