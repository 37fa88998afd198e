"""The jobs' argument and configuration errors, in process: exit 2 and one ERROR line naming the
key, before any Spark session (the unit tier; spark-submit itself is exercised by test_job.py)."""

from __future__ import annotations

import logging

import pytest

from conftest import ROOT, load_job

CONFIG = str(ROOT / "conf" / "local.yaml")


@pytest.mark.parametrize(
    ("job", "args", "message"),
    [
        ("extract_features", ["--set", "pca.k=0"], "config key 'pca.k'"),
        ("extract_features", ["--set", "model.colour=red"], "config key 'model.colour': unknown key"),
        ("extract_features", ["--input", "bucket/images"], "config key 'input.uri'"),
        ("extract_features", ["--run-id", "a/b"], "--run-id 'a/b'"),
        (
            "extract_features",
            ["--set", "model.precision=bf16", "--set", "model.engine=onnxruntime"],
            "bf16 needs",
        ),
        ("score", ["--model", "s3://b/m/", "--set", "output.format=xml"], "config key 'output.format'"),
        ("score", ["--model", "s3://b/m/", "--run-id", "../up"], "--run-id '../up'"),
    ],
)
def test_bad_configuration_exits_2_with_one_line_naming_the_key(
    job: str, args: list[str], message: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_job(job)
    monkeypatch.setattr(module, "build_session", lambda *_: pytest.fail("a Spark session was started"))
    caplog.set_level(logging.INFO)

    code = module.main(["--config", CONFIG, *args])

    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert message in errors[0]
