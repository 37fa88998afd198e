"""IAM policy evaluation by a maintained evaluator, ``@cloud-copilot/iam-simulate`` (npm, pinned
with its hashes in tests/iam/package-lock.json, installed by ``make test``): identity policies,
every condition operator, wildcards in actions and ARNs, explicit denies, as IAM evaluates them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iam_actions import IamRequest

HERE = Path(__file__).resolve().parent / "iam"
ACCOUNT = "123456789012"
PRINCIPAL = f"arn:aws:iam::{ACCOUNT}:role/fruits-features-emr-node"
# A KMS key's default key policy: it lets the account's IAM policies grant the key's use (without
# it, or a statement naming the role, no identity policy can: AWS KMS Developer Guide, "Default key
# policy").
DEFAULT_KEY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}


@dataclass(frozen=True)
class Decision:
    request: IamRequest
    result: str  # Allowed, ImplicitlyDenied, ExplicitlyDenied, Error
    allowed_by: tuple[str, ...]  # "<policy>#<Sid>" of every statement that allows it
    errors: Any = None

    @property
    def allowed(self) -> bool:
        return self.result == "Allowed"


def evaluate(
    policies: Mapping[str, dict[str, Any]], requests: Sequence[IamRequest], principal: str = PRINCIPAL
) -> list[Decision]:
    """Each request's decision under the identity ``policies`` (name -> document), in one run of
    the evaluator."""
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "@cloud-copilot" / "iam-simulate").is_dir():
        raise RuntimeError("the IAM evaluator is not installed: `make test` installs Node.js and tests/iam/")
    payload = {
        "principal": principal,
        "account": ACCOUNT,
        "policies": dict(policies),
        "requests": [
            {
                "action": r.action,
                "resource": r.resource,
                "context": dict(r.context),
                "resourcePolicy": DEFAULT_KEY_POLICY if r.action.startswith("kms:") else None,
            }
            for r in requests
        ],
    }
    done = subprocess.run(
        [node, str(HERE / "simulate.mjs")],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=HERE,
    )
    results = json.loads(done.stdout)
    return [
        Decision(r, out["result"], tuple(out["allowedBy"]), out.get("errors"))
        for r, out in zip(requests, results, strict=True)
    ]


def statement_names(name: str, policy: dict[str, Any]) -> set[str]:
    """``<name>#<Sid>`` of every statement of ``policy``, as :func:`evaluate` names them (each
    shipped statement has a Sid, which says what it is for)."""
    statements = policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]
    assert all("Sid" in s for s in statements), f"{name}: a statement without a Sid"
    return {f"{name}#{s['Sid']}" for s in statements}
