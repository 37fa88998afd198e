from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fruits_features.config_files import apply_overrides, build_config, load_config
from fruits_features.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = {"input": {"uri": "s3://in-bucket/images/"}, "output": {"uri": "s3://out-bucket/features/"}}


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def settings_missed(written: dict[str, Any], effective: dict[str, Any], where: str = "") -> list[str]:
    """The keys of ``written`` (a YAML file's settings) whose value the effective config does not hold.

    Spark's own settings (``spark.conf``) are strings to Spark: ``4`` holds as ``"4"``.
    """
    missed = []
    for key, value in written.items():
        if key not in effective:
            missed.append(f"{where}{key} (dropped)")
            continue
        held = effective[key]
        if isinstance(value, dict):
            missed += settings_missed(value, held, f"{where}{key}.")
        elif where.startswith("spark.conf."):
            if str(held).lower() != str(value).lower():
                missed.append(f"{where}{key}: {value!r} became {held!r}")
        elif held != value:
            missed.append(f"{where}{key}: {value!r} became {held!r}")
    return missed


@pytest.mark.parametrize("name", ["local", "ec2", "emr"])
def test_every_shipped_config_file_validates_and_every_setting_in_it_takes_effect(name: str) -> None:
    path = ROOT / "conf" / f"{name}.yaml"
    written = yaml.safe_load(path.read_text())

    config = load_config(path)

    assert settings_missed(written, config.to_dict()) == []
    assert config.model.engine == "auto"  # the shipped default: the fastest engine on each CPU
    assert config.pca.k == 50
    assert config.model.weights  # every target names its weights


def test_defaults_are_the_product_defaults() -> None:
    config = build_config(MINIMAL)
    assert config.model.weights == "imagenet"
    assert config.model.image_size == 224
    assert config.pca.k == 50


def test_set_overrides_one_key_with_its_yaml_type(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "input: {uri: 's3://a-bucket/x/'}\noutput: {uri: 's3://b-bucket/y/'}\n")
    config = load_config(path, overrides=["pca.k=10", "model.weights=/opt/w: odd/weights.h5"])
    assert config.pca.k == 10
    assert config.model.weights == "/opt/w: odd/weights.h5"


def test_input_and_output_arguments_replace_the_uris(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "input: {uri: 's3://a-bucket/x/'}\noutput: {uri: 's3://b-bucket/y/'}\n")
    config = load_config(path, input_uri="s3://c-bucket/photos/", output_uri="s3://d-bucket/out/")
    assert (config.input.uri, config.output.uri) == ("s3://c-bucket/photos/", "s3://d-bucket/out/")


def test_overrides_leave_the_original_data_alone() -> None:
    data = {"pca": {"k": 50}}
    assert apply_overrides(data, ["pca.k=3"]) == {"pca": {"k": 3}}
    assert data == {"pca": {"k": 50}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.wieghts=/w.h5"], "config key 'model.wieghts': unknown key"),
        (["colour=red"], "config key 'colour': unknown key"),
        (["pca.k=0"], "config key 'pca.k': Input should be greater than or equal to 1"),
        (["pca.k=-3"], "config key 'pca.k'"),
        (["pca.k=ten"], "config key 'pca.k'"),
        (["pca.k=2.5"], "config key 'pca.k'"),
        (["model.batch_size=true"], "config key 'model.batch_size'"),
        (
            ["input.uri=http://bucket/x"],
            "config key 'input.uri': Value error, expected an s3://bucket/prefix URI",
        ),
        (["output.uri=s3://Bad_Bucket/x"], "config key 'output.uri'"),
        (["model.weights=s3://UPPER/w.h5"], "config key 'model.weights'"),
        (["model.weights=s3://bucket-ok/folder/"], "config key 'model.weights'"),
        (["s3.retry_mode=sometimes"], "config key 's3.retry_mode'"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(apply_overrides(MINIMAL, overrides))
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_missing_input_is_named() -> None:
    with pytest.raises(ConfigError, match="config key 'input': required key is missing"):
        build_config({"output": MINIMAL["output"]})


def test_set_without_equals_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--set expects section\.key=value"):
        apply_overrides(MINIMAL, ["pca.k"])


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_config_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"))


def test_spark_conf_values_become_strings() -> None:
    config = build_config({**MINIMAL, "spark": {"conf": {"spark.python.worker.reuse": True, "x.y": 64}}})
    assert config.spark.conf == {"spark.python.worker.reuse": "true", "x.y": "64"}


def test_config_is_frozen() -> None:
    config = build_config(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        config.pca.k = 3


def test_account_id_given_as_a_number_is_kept_as_twelve_digits() -> None:
    config = build_config(apply_overrides(MINIMAL, ["s3.expected_bucket_owner=012345678901"]))
    assert config.s3.expected_bucket_owner == "012345678901"
    config = build_config(apply_overrides(MINIMAL, ["s3.expected_bucket_owner=123456789012"]))
    assert config.s3.expected_bucket_owner == "123456789012"


def test_one_spark_setting_can_be_set_without_replacing_the_others() -> None:
    data = {**MINIMAL, "spark": {"conf": {"spark.python.worker.reuse": "true"}}}
    config = build_config(apply_overrides(data, ["spark.conf.spark.task.cpus=2"]))
    assert config.spark.conf == {"spark.python.worker.reuse": "true", "spark.task.cpus": "2"}
