"""The shell scripts (shellcheck, the bootstrap's install plan and pin check, the EC2 setup) and the built
package running the job through spark-submit, away from the source tree."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

from conftest import sample_classes, upload_sample
from deploy_support import ROOT, build_dist
from fruits_features.deploy.package import Package, read_pins
from fruits_features.local_s3 import download_tree
from fruits_features.storage import S3Uri

BOOTSTRAP = ROOT / "scripts" / "bootstrap-emr.sh"
SETUP_EC2 = ROOT / "scripts" / "setup-ec2.sh"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    return build_dist(tmp_path_factory.mktemp("build") / "dist")


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *args], capture_output=True, text=True, timeout=120, check=False)


def bootstrap_dry_run(artifacts: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_script(
        str(BOOTSTRAP),
        "--artifacts",
        str(artifacts),
        "--python",
        sys.executable,
        "--pyproject",
        str(ROOT / "pyproject.toml"),
        "--dry-run",
        *extra,
    )


def edited_dist(package: Package, folder: Path, edits: dict[str, tuple[str, str]]) -> Path:
    """A copy of dist/ with text replaced in some files and SHA256SUMS brought up to date."""
    target = folder / "dist"
    shutil.copytree(package.dist, target)
    for name, (old, new) in edits.items():
        text = (target / name).read_text()
        assert old in text
        (target / name).write_text(text.replace(old, new))
    lines = []
    for line in (target / "SHA256SUMS").read_text().splitlines():
        name = line.split("  ", 1)[1]
        lines.append(f"{hashlib.sha256((target / name).read_bytes()).hexdigest()}  {name}")
    (target / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return target


def test_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (apt-get install -y shellcheck; .ci/run does it)"
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.sh"))
    assert len(scripts) >= 3

    result = subprocess.run(
        [shellcheck, "--severity=style", *scripts], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout


def test_bootstrap_dry_run_prints_the_pinned_install_and_checks_the_pins(package: Package) -> None:
    result = bootstrap_dry_run(
        package.dist, "--weights", "s3://models/resnet50.h5", "--weights-path", "/opt/w/abc/resnet50.h5"
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    pins = [line.removeprefix("pin ") for line in lines if line.startswith("pin ")]
    requirements = read_pins(package.dist / "requirements-emr.txt")
    assert pins == [str(pin) for pin in requirements.values()]
    commands = [line for line in lines if line.startswith("+ ")]
    pip = "+ /opt/fruits-features/venv/bin/python -m pip install --quiet --no-cache-dir --no-input"
    assert commands[0] == f"+ {sys.executable} -m venv /opt/fruits-features/venv"
    assert commands[1] == f"{pip} packaging=={requirements['packaging'].version}"
    assert commands[2].startswith(f"{pip} -r /")
    assert commands[2].endswith("/requirements-emr.txt")
    assert commands[3].startswith(f"{pip} --no-deps /")
    assert commands[3].endswith(f"/{package.wheel}")
    assert commands[4].startswith("+ aws s3 cp --only-show-errors s3://models/resnet50.h5 /")
    assert commands[5].endswith(" /opt/w/abc/resnet50.h5")
    assert len(commands) == 6
    assert (
        f"pin check: {len(requirements)} pins agree with constraints.txt and the declared ranges"
        in result.stderr
    )


@pytest.mark.parametrize(
    ("edits", "problem"),
    [
        (
            {"requirements-emr.txt": ("tensorflow==2.21.0", "tensorflow==2.20.0")},
            "pin check: tensorflow==2.20.0 but constraints.txt pins 2.21.0",
        ),
        (
            {
                "requirements-emr.txt": ("keras==3.15.1", "keras==2.15.0"),
                "constraints.txt": ("keras==3.15.1", "keras==2.15.0"),
            },
            "pin check: keras==2.15.0 is outside the range of the wheel: keras<4,>=3.3",
        ),
        (
            {"requirements-emr.txt": ("pillow==", "not-pillow==")},
            "pin check: pillow is required by the wheel (pillow>=10.3) but not pinned",
        ),
        (
            {"requirements-emr.txt": ("pandas==2.3.3", "pandas==2.3.3\npyspark==4.0.5")},
            "pins pyspark, which the nodes get from EMR's own Spark",
        ),
    ],
)
def test_bootstrap_dry_run_refuses_inconsistent_pins(
    package: Package, tmp_path: Path, edits: dict[str, tuple[str, str]], problem: str
) -> None:
    result = bootstrap_dry_run(edited_dist(package, tmp_path, edits))

    assert result.returncode == 1
    assert problem in result.stderr
    assert " -r " not in result.stdout  # nothing is installed past the check


def test_bootstrap_refuses_artifacts_that_differ_from_their_checksums(
    package: Package, tmp_path: Path
) -> None:
    target = tmp_path / "dist"
    shutil.copytree(package.dist, target)
    with (target / "requirements-emr.txt").open("a") as handle:
        handle.write("extra-package==1.0\n")

    result = bootstrap_dry_run(target)

    assert result.returncode == 1
    assert "requirements-emr.txt does not match its SHA256SUMS entry" in result.stderr


def test_bootstrap_usage_errors_are_one_line() -> None:
    result = run_script(str(BOOTSTRAP), "--dry-run")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "bootstrap-emr: error: --artifacts is required (the s3:// folder the submit command uploaded)"
    )
    assert run_script(str(BOOTSTRAP), "--help").stdout.startswith("EMR bootstrap action")


def test_setup_ec2_dry_run_installs_java_17_python_and_the_pinned_project() -> None:
    result = run_script(str(SETUP_EC2), "--venv", "/opt/ff/venv", "--dry-run")

    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert commands[0].endswith("apt-get update -q")
    assert commands[1].endswith(
        "apt-get install -y -q openjdk-17-jre-headless python3 python3-venv libopenblas0-pthread"
    )
    assert commands[-2].endswith(" -m venv /opt/ff/venv")
    assert commands[-1].endswith(
        f"/opt/ff/venv/bin/python -m pip install --quiet --no-input -c {ROOT}/constraints.txt {ROOT}"
    )
    command = "PYSPARK_PYTHON=/opt/ff/venv/bin/python /opt/ff/venv/bin/spark-submit --master 'local[4,4]'"
    assert f"{command} --driver-memory 4g" in result.stdout


@pytest.mark.integration
def test_the_built_wheel_runs_the_job_with_spark_submit_away_from_the_source_tree(
    package: Package, s3, bucket: str, weights: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The EC2 command shape, on an environment that has the dependencies but not the source tree."""
    # A fresh venv that sees the pinned dependencies of .venv (a plain path entry: the editable
    # install's own .pth, which points at src/, is not processed from there), then the built wheel.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = [str(python), "-c", "import fruits_features"]
    assert subprocess.run(probe, capture_output=True, check=False).returncode != 0, "source tree leaks in"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(package.dist / package.wheel),
        ],
        check=True,
    )
    upload_sample(s3, bucket, "images", sample_classes(3))
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONPATH"}
    }
    env["PYSPARK_PYTHON"] = str(python)

    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("spark-submit")),
            "--master",
            "local[2]",
            "--driver-memory",
            "1g",
            str(package.dist / "extract_features.py"),
            "--config",
            str(package.dist / "conf" / "local.yaml"),
            "--input",
            f"s3://{bucket}/images/",
            "--output",
            f"s3://{bucket}/features/",
            "--run-id",
            "from-wheel",
            "--set",
            f"model.weights={weights}",
            "--set",
            "model.image_size=64",
            "--set",
            "pca.k=2",
        ],
        cwd=run_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:]
    local = tmp_path / "out"
    download_tree(s3, S3Uri(bucket, "features/from-wheel/"), local)
    assert (local / "_SUCCESS").exists()
    frame = pd.concat(pd.read_csv(p) for p in sorted((local / "features").glob("part-*.csv")))
    assert list(frame.columns) == ["path", "label", "pc_1", "pc_2"]
    assert len(frame) == 6
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["counts"]["featurized"] == 6
    # The job ran from the installed wheel, not from src/.
    installed = subprocess.run(
        [str(python), "-c", "import fruits_features; print(fruits_features.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert installed.startswith(str(site))
