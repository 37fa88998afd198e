"""The job's IAM policies, proven against what the job really sends: every S3 request of every mode
is recorded where it reaches the S3 server, mapped to the IAM action, resource and condition keys
AWS authorises it with, and evaluated against conf/iam/job-policy.json and job-kms-policy.json by a
maintained IAM evaluator. A denied request fails; so does a statement no request needs.

The buckets and prefixes are those of conf/emr.yaml, the configuration the policies are written
for; output.sse is aws:kms with a key, so the KMS policy is exercised too.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, sample_classes, upload_sample
from fruits_features import pipeline, scoring
from fruits_features.config_files import build_config
from fruits_features.io.s3 import s3_client
from fruits_features.io.uri import S3Uri
from iam_actions import REGION, IamRequest, UnknownRequestError, iam_requests
from iam_eval import ACCOUNT, Decision, evaluate, statement_names
from s3_wire import WireRequest

IAM = ROOT / "conf" / "iam"
EMR = yaml.safe_load((ROOT / "conf" / "emr.yaml").read_text())
INPUT = S3Uri.parse(EMR["input"]["uri"])
OUTPUT = S3Uri.parse(EMR["output"]["uri"])
WEIGHTS = S3Uri.parse(EMR["model"]["weights"])
ONNX = S3Uri.parse(EMR["model"]["onnx"])
KEY_ID = "11111111-2222-3333-4444-555555555555"
KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY_ID}"
CLASSES = sample_classes(3)


def shipped_policies() -> dict[str, dict[str, Any]]:
    """The job role's policies, with job-kms-policy.json's placeholders filled in."""
    kms = (IAM / "job-kms-policy.json").read_text()
    for placeholder, value in {"REGION": REGION, "ACCOUNT_ID": ACCOUNT, "KEY_ID": KEY_ID}.items():
        kms = kms.replace(placeholder, value)
    return {
        "job-policy": json.loads((IAM / "job-policy.json").read_text()),
        "job-kms-policy": json.loads(kms),
    }


def config(**sections: Any) -> Any:
    base: dict[str, Any] = {
        "input": {"uri": str(INPUT)},
        "output": {"uri": str(OUTPUT), "sse": "aws:kms", "kms_key_id": KMS_KEY},
        # The 64 px export stored under the configured key: which bytes it holds does not change
        # the requests.
        "model": {"engine": "onnxruntime", "weights": str(WEIGHTS), "onnx": str(ONNX), "image_size": 64},
        "pca": {"k": 3},
        "classifier": {"enabled": False},
        "report": {"enabled": False},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return build_config(base)


@pytest.fixture(scope="module")
def recorded(
    spark, s3, s3_wire, weights: str, onnx_file_64: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[WireRequest]]:
    """Each mode's requests, in order: a first run with the classifier and the report (conf/emr.yaml's
    report), a first run without either, incremental apply and refit runs on it with one class
    added, and scoring with its model."""
    for bucket in {INPUT.bucket, OUTPUT.bucket, WEIGHTS.bucket}:
        s3.create_bucket(Bucket=bucket)
    upload_sample(s3, INPUT.bucket, INPUT.prefix.rstrip("/"), CLASSES[:2])
    s3.upload_file(weights, WEIGHTS.bucket, WEIGHTS.key)
    s3.upload_file(onnx_file_64, ONNX.bucket, ONNX.key)
    modes: dict[str, list[WireRequest]] = {}
    cache = tmp_path_factory.mktemp("weights-cache")
    with pytest.MonkeyPatch.context() as patch:
        # The driver downloads the model files into a cache of its own (the executors' cache may
        # already hold them: then they send a HEAD, the same s3:GetObject).
        patch.setenv("FRUITS_WEIGHTS_CACHE", str(cache))
        s3_client.cache_clear()

        def record(mode: str, run: Any) -> None:
            with s3_wire.recording(INPUT.bucket, OUTPUT.bucket, WEIGHTS.bucket) as requests:
                run()
            modes[mode] = list(requests)

        classified = {"classifier": {"enabled": True, "model_transfer": "boto3"}, "report": {"enabled": True}}
        record("first run, classifier and report", lambda: pipeline.run(spark, config(**classified), "first"))
        plain = {"output": {"incremental_base": False}}
        record("first run, no classifier", lambda: pipeline.run(spark, config(**plain), "plain"))
        upload_sample(s3, INPUT.bucket, INPUT.prefix.rstrip("/"), CLASSES[2:3])
        for mode in ("apply", "refit"):
            incremental = config(incremental={"previous_run": "first", "mode": mode})
            record(f"incremental {mode}", lambda c=incremental, m=mode: pipeline.run(spark, c, m))
        model = str(OUTPUT.join("first/model/"))
        record("scoring", lambda: scoring.run_scoring(spark, config(), model, "scores"))
    s3_client.cache_clear()
    return modes


# What EMRFS sends for classifier.model_transfer: hadoop, which cannot run here (no EMRFS off
# EMR): Spark ML's writer through Hadoop's FileOutputCommitter writes each file under
# _temporary/ and renames it into place (on S3: copy, then delete), writes _SUCCESS, lists and
# reads its folders; EMRFS keeps "<dir>_$folder$" markers, and aborts a multipart upload that
# fails (EMR Management Guide: "Using the EMRFS S3-optimized committer", "Authorizing access to
# EMRFS data in Amazon S3"). Modelled here, not recorded.
def emrfs_requests(run: str) -> list[IamRequest]:
    bucket, model = OUTPUT.bucket, f"{OUTPUT.prefix}{run}/model"
    temporary = f"{model}/metadata/_temporary/0/task_0/part-00000"
    arn = f"arn:aws:s3:::{bucket}"
    return [
        IamRequest("s3:ListBucket", arn, (("s3:prefix", f"{model}/"),)),
        IamRequest("s3:GetObject", f"{arn}/{model}"),  # getFileStatus: HEAD of the key itself
        IamRequest("s3:PutObject", f"{arn}/{model}_$folder$"),
        IamRequest("s3:PutObject", f"{arn}/{temporary}"),
        IamRequest("s3:GetObject", f"{arn}/{temporary}"),  # the copy's source
        IamRequest("s3:PutObject", f"{arn}/{model}/metadata/part-00000"),
        IamRequest("s3:DeleteObject", f"{arn}/{temporary}"),
        IamRequest("s3:DeleteObject", f"{arn}/{model}_$folder$"),
        IamRequest("s3:PutObject", f"{arn}/{model}/metadata/_SUCCESS"),
        IamRequest("s3:AbortMultipartUpload", f"{arn}/{model}/stages/0/data/part-00000.parquet"),
        IamRequest("s3:ListMultipartUploadParts", f"{arn}/{model}/stages/0/data/part-00000.parquet"),
        IamRequest("kms:GenerateDataKey", KMS_KEY, (("kms:ViaService", f"s3.{REGION}.amazonaws.com"),)),
    ]


@pytest.fixture(scope="module")
def decisions(recorded: dict[str, list[WireRequest]]) -> dict[str, list[Decision]]:
    requests = {mode: [r for wire in wires for r in iam_requests(wire)] for mode, wires in recorded.items()}
    requests["EMRFS model save (modelled)"] = emrfs_requests("first")
    everything = [r for mode in requests.values() for r in mode]
    answers = iter(evaluate(shipped_policies(), everything))
    return {mode: [next(answers) for _ in mode_requests] for mode, mode_requests in requests.items()}


def describe(decisions: list[Decision]) -> str:
    """One line per distinct request: the IAM request, its decision, the statements that allow it."""
    lines = {f"{d.request}  ->  {d.result} {' '.join(d.allowed_by)}  ({d.request.wire})" for d in decisions}
    return "\n".join(sorted(lines))


@pytest.mark.parametrize(
    "mode",
    [
        "first run, classifier and report",
        "first run, no classifier",
        "incremental apply",
        "incremental refit",
        "scoring",
        "EMRFS model save (modelled)",
    ],
)
def test_the_policies_allow_every_request_of_every_mode(
    decisions: dict[str, list[Decision]], mode: str
) -> None:
    made = decisions[mode]
    assert made, f"{mode}: no request recorded"
    denied = [d for d in made if not d.allowed]
    assert not denied, f"{mode}: {len(denied)} of {len(made)} requests denied:\n{describe(denied)}"


def test_every_statement_is_needed_by_some_request(decisions: dict[str, list[Decision]]) -> None:
    used = {name for mode in decisions.values() for d in mode for name in d.allowed_by}
    shipped = set().union(*(statement_names(n, p) for n, p in shipped_policies().items()))
    assert shipped - used == set(), f"statements no request needs: {sorted(shipped - used)}"


def test_least_privilege_nothing_written_to_the_input_nor_outside_the_output() -> None:
    images = f"arn:aws:s3:::{INPUT.bucket}/{INPUT.prefix}"
    out = f"arn:aws:s3:::{OUTPUT.bucket}"
    via_s3 = (("kms:ViaService", f"s3.{REGION}.amazonaws.com"),)
    forbidden = [
        IamRequest("s3:PutObject", f"{images}Apple Braeburn/new.jpg"),
        IamRequest("s3:DeleteObject", f"{images}Apple Braeburn/r_6_100.jpg"),
        IamRequest("s3:GetObject", f"arn:aws:s3:::{INPUT.bucket}/elsewhere/secret.csv"),
        IamRequest("s3:ListBucket", f"arn:aws:s3:::{INPUT.bucket}", (("s3:prefix", ""),)),
        IamRequest("s3:PutObject", f"{out}/other/run/part-00000.csv"),
        IamRequest("s3:DeleteObject", f"{out}/other/run/part-00000.csv"),
        IamRequest("s3:GetObject", f"{out}/other/secret.csv"),
        IamRequest("s3:PutObject", f"arn:aws:s3:::{WEIGHTS.bucket}/{WEIGHTS.key}"),
        IamRequest("s3:DeleteBucket", out),
        IamRequest("kms:Decrypt", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/other", via_s3),
        IamRequest("kms:Decrypt", KMS_KEY, (("kms:ViaService", f"lambda.{REGION}.amazonaws.com"),)),
    ]
    allowed = [d for d in evaluate(shipped_policies(), forbidden) if d.allowed]
    assert not allowed, describe(allowed)


def request_table(decisions: dict[str, list[Decision]]) -> str:
    """Markdown: per mode, each distinct authorisation (keys generalised) and the statements that
    allow it; docs/aws.md quotes it."""
    out = []
    for mode, made in decisions.items():
        rows = sorted(
            {(d.request.action, generalise(d.request.resource), ", ".join(d.allowed_by)) for d in made}
        )
        out.append(f"#### {mode}\n\n| action | resource | allowed by |\n| --- | --- | --- |")
        out.extend(
            f"| `{action}` | `{resource}` | {allowed or 'DENIED'} |" for action, resource, allowed in rows
        )
        out.append("")
    return "\n".join(out).replace("job-policy#", "").replace("job-kms-policy#", "kms: ")


def generalise(resource: str) -> str:
    """A resource with its run ids, class folders and file names as ``*``."""
    resource = re.sub(rf"(:{INPUT.bucket}/{INPUT.prefix}).*", r"\1*", resource)
    resource = re.sub(rf"(:{OUTPUT.bucket}/{OUTPUT.prefix})[^/]+/", r"\1*/", resource)
    return re.sub(r"(/\*/(model|embeddings|features|predictions|rejected|report)/).*", r"\1*", resource)


def test_docs_list_every_request_of_every_mode(decisions: dict[str, list[Decision]]) -> None:
    """docs/aws.md shows what each mode asks of S3 and KMS, as recorded here (regenerate the block
    between its markers with FRUITS_IAM_TABLE=<file> and paste it)."""
    table = request_table(decisions)
    if os.environ.get("FRUITS_IAM_TABLE"):
        Path(os.environ["FRUITS_IAM_TABLE"]).write_text(table)
    docs = (ROOT / "docs" / "aws.md").read_text()
    quoted = docs.split("<!-- iam-requests:begin -->\n", 1)[-1].split("<!-- iam-requests:end -->", 1)[0]
    assert quoted.strip() == table.strip()


def test_each_s3_operation_maps_to_the_actions_aws_authorises_it_with() -> None:
    def wire(method: str, key: str = "", query: str = "", headers: Any = (), body: bytes = b"") -> Any:
        params = tuple(tuple(p.split("=", 1)) if "=" in p else (p, "") for p in query.split("&") if p)
        return [
            (r.action, r.resource, r.context)
            for r in iam_requests(WireRequest(method, "b", key, params, headers, body))
        ]

    assert wire("GET", query="list-type=2&prefix=in/") == [
        ("s3:ListBucket", "arn:aws:s3:::b", (("s3:prefix", "in/"),))
    ]
    assert wire("GET", query="list-type=2") == [("s3:ListBucket", "arn:aws:s3:::b", (("s3:prefix", ""),))]
    assert wire("HEAD", "k") == wire("GET", "k") == [("s3:GetObject", "arn:aws:s3:::b/k", ())]
    assert wire("PUT", "to/k", headers=(("x-amz-copy-source", "/src/from/a%20b"),)) == [
        ("s3:PutObject", "arn:aws:s3:::b/to/k", ()),
        ("s3:GetObject", "arn:aws:s3:::src/from/a b", ()),
    ]
    assert wire("POST", query="delete", body=b"<Delete><Object><Key>x/1</Key></Object></Delete>") == [
        ("s3:DeleteObject", "arn:aws:s3:::b/x/1", ())
    ]
    assert [a for a, _, _ in wire("POST", "k", "uploads") + wire("PUT", "k", "partNumber=1&uploadId=u")] == [
        "s3:PutObject",
        "s3:PutObject",
    ]
    assert wire("DELETE", "k", "uploadId=u")[0][0] == "s3:AbortMultipartUpload"
    encrypted = (
        ("x-amz-server-side-encryption", "aws:kms"),
        ("x-amz-server-side-encryption-aws-kms-key-id", KMS_KEY),
    )
    assert wire("PUT", "k", headers=encrypted)[1] == (
        "kms:GenerateDataKey",
        KMS_KEY,
        (("kms:ViaService", f"s3.{REGION}.amazonaws.com"),),
    )
    with pytest.raises(UnknownRequestError, match="tagging"):
        wire("PUT", "k", "tagging")
