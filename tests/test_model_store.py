"""``classifier.model_transfer: boto3`` away from local mode, without a JVM: the check before a run
(``classifier.staging_dir`` required, absolute, an existing folder) and the driver's check of what
Spark's writer left in the staging folder before anything is uploaded.

The folders below copy the layout Spark 4.0's ``PipelineModel`` writer leaves: written by the
executors where they share the folder, and only the driver's ``_SUCCESS`` files where an executor
wrote to a disk of its own (as seen with a worker in a mount namespace of its own).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from fruits_features.config_files import build_config
from fruits_features.errors import ConfigError, PipelineError
from fruits_features.io.uri import S3Uri
from fruits_features.stages.model_info import ModelInfo
from fruits_features.stages.model_store import (
    ModelStagingError,
    check_model_transfer,
    check_staged_pipeline,
    save_model,
    staged_pipeline_gaps,
)

# The scoring pipeline's stages, and whether each writes data/ besides its metadata/.
STAGES = [
    ("StandardScaler_728d486159ab", True),
    ("PCA_5fa7bfaebc84", True),
    ("VectorSlicer_5104a73ee72c", False),
    ("LogisticRegression_9285838e1530", True),
    ("IndexToString_bb1dd37727cc", False),
]


def spark_folder(folder: Path, part: tuple[str, str] | None) -> None:
    """One folder Spark wrote through a Hadoop job: ``_SUCCESS`` (the driver's job commit) and, when
    the executors' part file reached this disk, ``part-00000-<uuid>-c000.<suffix>``."""
    folder.mkdir(parents=True)
    (folder / "_SUCCESS").write_bytes(b"")
    if part is not None:
        suffix, body = part
        (folder / f"part-00000-{uuid.uuid4()}-c000.{suffix}").write_text(body)


def write_pipeline(folder: Path, *, executors_here: bool = True) -> None:
    """What ``PipelineModel.write().save(folder)`` leaves in ``folder`` as the driver sees it."""

    def metadata(cls: str, uid: str, params: dict[str, Any]) -> tuple[str, str] | None:
        body = {"class": cls, "sparkVersion": "4.0.5", "uid": uid, "paramMap": params, "defaultParamMap": {}}
        return ("txt", json.dumps(body) + "\n") if executors_here else None

    uids = [uid for uid, _ in STAGES]
    spark_folder(
        folder / "metadata",
        metadata("org.apache.spark.ml.PipelineModel", "PipelineModel_c08792a58f21", {"stageUids": uids}),
    )
    for index, (uid, has_data) in enumerate(STAGES):
        stage = folder / "stages" / f"{index}_{uid}"
        spark_folder(stage / "metadata", metadata(f"org.apache.spark.ml.{uid.split('_')[0]}", uid, {}))
        if has_data:
            spark_folder(stage / "data", ("snappy.parquet", "PAR1...PAR1") if executors_here else None)


def boto3_config(staging_dir: str | None) -> Any:
    classifier: dict[str, Any] = {"enabled": True, "model_transfer": "boto3"}
    if staging_dir is not None:
        classifier["staging_dir"] = staging_dir
    return build_config(
        {"input": {"uri": "s3://b-in/x/"}, "output": {"uri": "s3://b-out/y/"}, "classifier": classifier}
    )


# -- before the run ------------------------------------------------------------------------------


@pytest.mark.parametrize("master", ["local", "local[4]", "local[*]", "local-cluster[2,1,1024]"])
def test_local_masters_stage_in_the_temporary_folder(master: str) -> None:
    check_model_transfer(boto3_config(None), master)


@pytest.mark.parametrize("master", ["spark://10.0.0.5:7077", "yarn", "k8s://https://api:6443"])
def test_another_master_needs_a_staging_folder_and_the_message_names_both(master: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_model_transfer(boto3_config(None), master)
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "\n" not in message
    assert message.startswith("config key 'classifier.staging_dir': unset")
    assert repr(master) in message


def test_a_shared_staging_folder_is_accepted_on_a_cluster(tmp_path: Path) -> None:
    check_model_transfer(boto3_config(str(tmp_path)), "spark://127.0.0.1:7077")


def test_a_relative_staging_folder_is_refused_on_a_cluster_but_not_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "staging").mkdir()
    check_model_transfer(boto3_config("staging"), "local[2]")
    with pytest.raises(ConfigError, match=r"'classifier.staging_dir': 'staging' is relative.*'yarn'"):
        check_model_transfer(boto3_config("staging"), "yarn")


def test_a_staging_folder_missing_on_the_driver_is_refused_before_the_run(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    for master in ("local[2]", "spark://127.0.0.1:7077"):
        with pytest.raises(ConfigError, match=rf"'classifier.staging_dir': {missing} is not a folder"):
            check_model_transfer(boto3_config(str(missing)), master)


def test_hadoop_transfer_needs_no_staging_folder() -> None:
    config = boto3_config(None)
    config = config.model_copy(
        update={"classifier": config.classifier.model_copy(update={"model_transfer": "hadoop"})}
    )
    check_model_transfer(config, "yarn")


# -- after Spark's save --------------------------------------------------------------------------


def test_a_pipeline_the_executors_wrote_here_is_complete(tmp_path: Path) -> None:
    write_pipeline(tmp_path / "pipeline")
    assert staged_pipeline_gaps(tmp_path / "pipeline") == []
    check_staged_pipeline(tmp_path / "pipeline", str(tmp_path))


def test_a_pipeline_the_executors_wrote_elsewhere_is_refused_naming_the_setting(tmp_path: Path) -> None:
    write_pipeline(tmp_path / "pipeline", executors_here=False)

    with pytest.raises(ModelStagingError) as caught:
        check_staged_pipeline(tmp_path / "pipeline", "/mnt/not-shared")

    message = str(caught.value)
    assert isinstance(caught.value, PipelineError)
    assert caught.value.exit_code == 1
    assert "\n" not in message
    assert message.startswith("config key 'classifier.staging_dir' (/mnt/not-shared): ")
    assert "finds no metadata/part-* there" in message
    assert "the driver and every executor see at the same path" in message


def test_each_stage_missing_its_metadata_or_data_is_found(tmp_path: Path) -> None:
    folder = tmp_path / "pipeline"
    write_pipeline(folder)
    (pca_data,) = (folder / "stages" / "1_PCA_5fa7bfaebc84" / "data").glob("part-*")
    pca_data.unlink()
    (slicer_metadata,) = (folder / "stages" / "2_VectorSlicer_5104a73ee72c" / "metadata").glob("part-*")
    slicer_metadata.unlink()
    shutil.rmtree(folder / "stages" / "4_IndexToString_bb1dd37727cc")

    assert staged_pipeline_gaps(folder) == [
        "stages/1_PCA_5fa7bfaebc84/data/part-*",
        "stages/2_VectorSlicer_5104a73ee72c/metadata/part-*",
        "stages/<n>_IndexToString_bb1dd37727cc/",
    ]
    with pytest.raises(
        ModelStagingError, match=r"finds no stages/1_PCA_5fa7bfaebc84/data/part-\* and 2 more"
    ):
        check_staged_pipeline(folder, str(tmp_path))


def test_unreadable_pipeline_metadata_is_a_gap(tmp_path: Path) -> None:
    spark_folder(tmp_path / "metadata", ("txt", "not json\n"))
    (part,) = (tmp_path / "metadata").glob("part-*")
    assert staged_pipeline_gaps(tmp_path) == [f"a pipeline's metadata in metadata/{part.name}"]


class FakeWriter:
    def __init__(self, executors_here: bool) -> None:
        self.executors_here = executors_here
        self.saved_to: list[str] = []

    def save(self, uri: str) -> None:
        assert uri.startswith("file:///")
        self.saved_to.append(uri)
        write_pipeline(Path(uri.removeprefix("file://")), executors_here=self.executors_here)


class FakeModel:
    """Stands in for a fitted PipelineModel: its writer leaves what Spark's would."""

    def __init__(self, executors_here: bool) -> None:
        self.writer = FakeWriter(executors_here)

    def write(self) -> FakeWriter:
        return self.writer


class RecordingClient:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:  # noqa: N803
        self.keys.append(Key)


INFO = ModelInfo(
    image_size=64,
    weights="/w.h5",
    weights_sha256="ab" * 32,
    feature_dim=2048,
    k=5,
    variance_target=None,
    labels=("Apple", "Kiwi"),
    run_id="r",
    trained_at="2026-12-02T05:00:00Z",
    spark_version="4.0.5",
)


@pytest.mark.parametrize("executors_here", [True, False])
def test_save_model_uploads_only_a_complete_staged_pipeline(tmp_path: Path, executors_here: bool) -> None:
    model, client = FakeModel(executors_here), RecordingClient()
    save = lambda: save_model(  # noqa: E731
        model,  # type: ignore[arg-type]
        INFO,
        S3Uri("bucket", "run/model/"),
        client,  # type: ignore[arg-type]
        transfer="boto3",
        staging_dir=str(tmp_path),
    )

    if executors_here:
        save()
        assert "run/model/pipeline/metadata/_SUCCESS" in client.keys
        assert sum("/data/part-" in key for key in client.keys) == 3
        assert client.keys[-1] == "run/model/model.json"  # last: a folder without it is no model
    else:
        with pytest.raises(ModelStagingError, match=rf"'classifier.staging_dir' \({tmp_path}\)"):
            save()
        assert client.keys == []  # nothing uploaded, no model.json
    assert model.writer.saved_to[0].startswith(tmp_path.as_uri() + "/fruits-model-")
    assert not list(tmp_path.iterdir())  # the staged copy is removed either way
