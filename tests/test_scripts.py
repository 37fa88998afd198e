"""The shell scripts (shellcheck, the bootstrap's install plan and pin check, the EC2 setup) and the built
package running the job through spark-submit, away from the source tree."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyspark
import pytest

from conftest import sample_classes, upload_sample
from deploy_support import ROOT, with_environment
from fruits_features.deploy.package import Package
from fruits_features.deploy.pins import read_pins
from fruits_features.dev.spark_submit import driver_java_options, job_command
from fruits_features.io.folders import download_folder
from fruits_features.io.uri import S3Uri

BOOTSTRAP = ROOT / "scripts" / "bootstrap-emr.sh"
SETUP_EC2 = ROOT / "scripts" / "setup-ec2.sh"


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
    assert shellcheck, "shellcheck is not installed: `make test` installs it (scripts/setup-system.sh test)"
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.sh"))
    assert len(scripts) >= 3

    result = subprocess.run(
        [shellcheck, "--severity=style", *scripts], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout


def install_commands(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("engine", ["onnxruntime", "tensorflow"])
def test_bootstrap_dry_run_installs_the_engines_pinned_set_and_checks_the_pins(
    package: Package, engine: str
) -> None:
    weights = ["--weights", "s3://models/resnet50.h5", "--weights-path", "/opt/w/abc/resnet50.h5"]

    result = bootstrap_dry_run(package.dist, "--engine", engine, *(weights if engine == "tensorflow" else []))

    assert result.returncode == 0, result.stderr
    name = f"requirements-emr-{engine}.txt"
    requirements = read_pins(package.dist / name)
    pins = [line.removeprefix("pin ") for line in result.stdout.splitlines() if line.startswith("pin ")]
    assert pins == [str(pin) for pin in requirements.values()]
    assert ("tensorflow" in requirements) == (engine == "tensorflow")
    commands = install_commands(result)
    pip = "+ /opt/fruits-features/venv/bin/python -m pip install --quiet --no-cache-dir --no-input"
    assert commands[0] == f"+ {sys.executable} -m venv /opt/fruits-features/venv"
    assert commands[1] == f"{pip} packaging=={requirements['packaging'].version}"
    assert commands[2].startswith(f"{pip} -r /")
    assert commands[2].endswith(f"/{name}")
    assert commands[3].startswith(f"{pip} --no-deps /")
    assert commands[3].endswith(f"/{package.wheel}")
    if engine == "tensorflow":  # the weights are copied to the node for Keras
        assert commands[4].startswith("+ aws s3 cp --only-show-errors s3://models/resnet50.h5 /")
        assert commands[5].endswith(" /opt/w/abc/resnet50.h5")
        assert len(commands) == 6
    else:  # the job fetches its model files from S3 itself
        assert len(commands) == 4
    assert (
        f"pin check: {len(requirements)} pins of {name} agree with constraints.txt and the declared ranges"
        in result.stderr
    )


def test_bootstrap_with_a_packed_environment_unpacks_it_and_installs_nothing_from_pypi(
    package: Package, tmp_path: Path
) -> None:
    packed = with_environment(package, tmp_path, "onnxruntime")
    archive = "environment-onnxruntime.tar.gz"

    result = bootstrap_dry_run(packed.dist, "--engine", "onnxruntime", "--environment", archive)

    assert result.returncode == 0, result.stderr
    commands = install_commands(result)
    assert commands[:2] == ["+ rm -rf /opt/fruits-features/venv", "+ mkdir -p /opt/fruits-features/venv"]
    assert commands[2].startswith("+ tar -xzf /")
    assert commands[2].endswith(f"/{archive} -C /opt/fruits-features/venv")
    assert len(commands) == 3
    assert not any("pip" in command for command in commands)
    # Another engine's archive, or one changed after the build, is refused.
    other = bootstrap_dry_run(packed.dist, "--engine", "tensorflow", "--environment", archive)
    assert other.returncode == 1
    assert f"--environment {archive} was not packed for --engine tensorflow" in other.stderr
    (packed.dist / archive).write_bytes(b"changed")
    changed = bootstrap_dry_run(packed.dist, "--engine", "onnxruntime", "--environment", archive)
    assert changed.returncode == 1
    assert f"{archive} does not match its SHA256SUMS entry" in changed.stderr


def test_bootstrap_defaults_to_the_onnxruntime_set(package: Package) -> None:
    result = bootstrap_dry_run(package.dist)

    assert result.returncode == 0, result.stderr
    assert install_commands(result)[2].endswith("/requirements-emr-onnxruntime.txt")
    assert "engine onnxruntime: " in result.stderr


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (
            ["--weights", "s3://models/resnet50.h5", "--weights-path", "/opt/w/abc/resnet50.h5"],
            "--weights is for --engine tensorflow: with onnxruntime the job fetches its model files from S3",
        ),
        (["--engine", "torch"], "--engine must be onnxruntime, tensorflow, openvino or auto, got 'torch'"),
    ],
)
def test_bootstrap_refuses_weights_without_tensorflow_and_unknown_engines(
    package: Package, args: list[str], problem: str
) -> None:
    result = bootstrap_dry_run(package.dist, *args)

    assert result.returncode == 1
    assert result.stderr.strip() == f"bootstrap-emr: error: {problem}"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("engine", "edits", "problem"),
    [
        (
            "tensorflow",
            {"requirements-emr-tensorflow.txt": ("tensorflow==2.21.0", "tensorflow==2.20.0")},
            "pin check: tensorflow==2.20.0 but constraints.txt pins 2.21.0",
        ),
        (
            "tensorflow",
            {
                "requirements-emr-tensorflow.txt": ("keras==3.15.1", "keras==2.15.0"),
                "constraints.txt": ("keras==3.15.1", "keras==2.15.0"),
            },
            "pin check: keras==2.15.0 is outside the range of the wheel: keras<4,>=3.3",
        ),
        (
            "tensorflow",  # the tensorflow extra is checked for its engine
            {"requirements-emr-tensorflow.txt": ("tensorflow==", "not-tensorflow==")},
            'pin check: tensorflow is required by the wheel (tensorflow<3,>=2.16; extra == "tensorflow") '
            "but not pinned",
        ),
        (
            "onnxruntime",
            {"requirements-emr-onnxruntime.txt": ("onnxruntime==1.32.0", "onnxruntime==1.31.0")},
            "pin check: onnxruntime==1.31.0 but constraints.txt pins 1.32.0",
        ),
        (
            "onnxruntime",
            {"requirements-emr-onnxruntime.txt": ("onnxruntime==", "not-onnxruntime==")},
            "pin check: onnxruntime is required by the wheel (onnxruntime>=1.17) but not pinned",
        ),
        (
            "onnxruntime",
            {"requirements-emr-onnxruntime.txt": ("pillow==", "not-pillow==")},
            "pin check: pillow is required by the wheel (pillow>=10.3) but not pinned",
        ),
        (
            "onnxruntime",
            {"requirements-emr-onnxruntime.txt": ("pandas==2.3.3", "pandas==2.3.3\npyspark==4.0.5")},
            "requirements-emr-onnxruntime.txt pins pyspark, which the nodes get from EMR's own Spark",
        ),
    ],
)
def test_bootstrap_dry_run_refuses_inconsistent_pins(
    package: Package, tmp_path: Path, engine: str, edits: dict[str, tuple[str, str]], problem: str
) -> None:
    result = bootstrap_dry_run(edited_dist(package, tmp_path, edits), "--engine", engine)

    assert result.returncode == 1
    assert problem in result.stderr
    assert " -r " not in result.stdout  # nothing is installed past the check


def test_bootstrap_refuses_artifacts_that_differ_from_their_checksums(
    package: Package, tmp_path: Path
) -> None:
    target = tmp_path / "dist"
    shutil.copytree(package.dist, target)
    with (target / "requirements-emr-tensorflow.txt").open("a") as handle:
        handle.write("extra-package==1.0\n")

    assert bootstrap_dry_run(target, "--engine", "onnxruntime").returncode == 0  # not the file it fetches
    result = bootstrap_dry_run(target, "--engine", "tensorflow")

    assert result.returncode == 1
    assert "requirements-emr-tensorflow.txt does not match its SHA256SUMS entry" in result.stderr


def test_bootstrap_usage_errors_are_one_line() -> None:
    result = run_script(str(BOOTSTRAP), "--dry-run")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "bootstrap-emr: error: --artifacts is required (the s3:// folder the submit command uploaded)"
    )
    assert run_script(str(BOOTSTRAP), "--help").stdout.startswith("EMR bootstrap action")


@pytest.mark.parametrize(
    ("engine", "project", "job_args"),
    [
        (
            None,
            f"{ROOT}\\[openvino\\]",
            "--output s3://BUCKET/features/\n",
        ),  # the default: auto, no TensorFlow
        ("auto", f"{ROOT}\\[openvino\\]", "--output s3://BUCKET/features/\n"),
        ("openvino", f"{ROOT}\\[openvino\\]", "--output s3://BUCKET/features/ --set model.engine=openvino\n"),
        ("onnxruntime", str(ROOT), "--output s3://BUCKET/features/ --set model.engine=onnxruntime\n"),
        (
            "tensorflow",
            f"{ROOT}\\[tensorflow\\]",
            "--output s3://BUCKET/features/ --set model.engine=tensorflow\n",
        ),
    ],
)
def test_setup_ec2_dry_run_installs_java_17_python_and_the_pinned_project_for_the_engine(
    engine: str | None, project: str, job_args: str
) -> None:
    result = run_script(
        str(SETUP_EC2), "--venv", "/opt/ff/venv", "--dry-run", *(["--engine", engine] if engine else [])
    )

    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert commands[0].endswith("apt-get update -q")
    assert commands[1].endswith(
        "apt-get install -y -q openjdk-17-jre-headless python3 python3-venv libopenblas0-pthread"
    )
    assert commands[-2].endswith(" -m venv /opt/ff/venv")
    assert commands[-1].endswith(
        f"/opt/ff/venv/bin/python -m pip install --quiet --no-input -c {ROOT}/constraints.txt {project}"
    )
    command = "PYSPARK_PYTHON=/opt/ff/venv/bin/python /opt/ff/venv/bin/spark-submit --master 'local[4,4]'"
    assert f"{command} --driver-memory 4g" in result.stdout
    assert result.stdout.endswith(job_args)
    assert f"({engine or 'auto'} engine)" in result.stdout


def test_setup_ec2_refuses_an_unknown_engine() -> None:
    result = run_script(str(SETUP_EC2), "--engine", "torch", "--dry-run")

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "setup-ec2: error: --engine must be onnxruntime, tensorflow, openvino or auto, got 'torch'"
    )


def pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This environment's pip, working on the venv of ``python``."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.integration
@pytest.mark.slow
def test_the_built_wheel_runs_the_job_on_the_light_onnxruntime_set_without_tensorflow(
    package: Package, s3, bucket: str, weights: str, onnx_file: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """An onnxruntime EMR node, away from the source tree: a venv with requirements-emr-onnxruntime.txt
    and the wheel, nothing else. No pyspark either: spark-submit puts its own Spark's Python package on
    the driver's and workers' path, as EMR's Spark does. The job's defaults choose the engine."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    requirements = package.dist / "requirements-emr-onnxruntime.txt"
    # --no-deps: a dependency the set lacks is not quietly added by pip; `pip check` then finds it.
    # The pip cache (`make setup` filled it with these very versions) makes this a ~10 s install.
    installed = pip(
        python, "install", "--quiet", "--no-input", "--no-deps", "--no-compile", "-r", str(requirements)
    )
    assert installed.returncode == 0, (
        f"installing {requirements.name} needs the pip cache or the index:\n{installed.stderr}"
    )
    wheel = pip(python, "install", "--quiet", "--no-deps", "--no-index", str(package.dist / package.wheel))
    assert wheel.returncode == 0, wheel.stderr
    # The set is closed: every requirement of every installed distribution is met, but EMR's Spark.
    problems = pip(python, "check").stdout.splitlines()
    assert problems == [f"fruits-features {package.version} requires pyspark, which is not installed."]
    probe = (
        "import importlib.util as u; print(u.find_spec('fruits_features').origin); "
        "print([m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'pyspark') if u.find_spec(m)])"
    )
    origin, found = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert origin.startswith(str(venv))  # the wheel, not src/
    assert found == "[]"
    upload_sample(s3, bucket, "images", sample_classes(3))
    run_dir = tmp_path / "cwd"
    run_dir.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PYTHONPATH"}
    }
    env["PYSPARK_PYTHON"] = str(python)
    # The Spark installation, as EMR's /usr/lib/spark: the venv cannot find it, having no pyspark.
    env["SPARK_HOME"] = str(Path(pyspark.__file__).parent)

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
            f"model.onnx={onnx_file}",
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
    download_folder(s3, S3Uri(bucket, "features/from-wheel/"), local)
    assert (local / "_SUCCESS").exists()
    frame = pd.concat(pd.read_csv(p) for p in sorted((local / "features").glob("part-*.csv")))
    assert list(frame.columns) == ["path", "label", "pc_1", "pc_2"]
    assert len(frame) == 6
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["counts"]["featurized"] == 6
    # conf/local.yaml's engine, auto, falls back to ONNX Runtime fp32 where OpenVINO is not installed.
    assert manifest["model"]["engine"] == "auto"
    (used,) = manifest["model"]["executors"]
    assert used.startswith("onnxruntime fp32 (CPU: "), used
    assert manifest["model"]["onnx"] == onnx_file
    assert manifest["versions"]["tensorflow"] is None
    assert manifest["versions"]["keras"] is None


SETUP_SYSTEM = ROOT / "scripts" / "setup-system.sh"
# What setup-system.sh runs besides the tools it looks for: the rest of PATH is hidden.
BASE_TOOLS = ("sed", "head", "grep", "mktemp", "cat", "env", "chmod")


def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def stub_path(tmp_path: Path, *, root: bool, tools: tuple[str, ...] = ()) -> Path:
    # ldconfig lists a LAPACK only once a (stub) libopenblas0-pthread is installed.
    """A PATH folder where only the base tools, this Python and ``tools`` (stubs) exist."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in BASE_TOOLS:
        real = shutil.which(name)
        assert real, name
        (folder / name).symlink_to(real)
    (folder / "python3").symlink_to(sys.executable)
    stub(folder, "id", f"echo {0 if root else 1000}")
    stub(
        folder,
        "ldconfig",
        "echo '\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6'\n"
        f"[ -e {folder}/libopenblas0-pthread ] && echo '\tliblapack.so.3 (libc6) => /usr/lib/liblapack.so.3'",
    )
    stub(folder, "java", "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2")
    for name in tools:
        stub(folder, name, "exit 0")
    return folder


def setup_system(folder: Path, *args: str, extra_env: dict[str, str] | None = None):
    env = {"PATH": str(folder), "HOME": str(folder.parent), "TMPDIR": str(folder.parent), **(extra_env or {})}
    return subprocess.run(
        ["/bin/bash", str(SETUP_SYSTEM), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_setup_check_reports_what_is_present_and_what_it_would_install(tmp_path: Path) -> None:
    folder = stub_path(tmp_path, root=True, tools=("apt-get",))

    result = setup_system(folder, "--check", "test")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("setup: java ") and " present: " in line for line in lines)
    for missing in ("chromium", "shellcheck", "node", "lapack"):
        assert any(line.startswith(f"setup: {missing} ") and " missing: " in line for line in lines), lines
    assert (
        lines[-1] == "setup: would install with apt-get: chromium shellcheck nodejs npm libopenblas0-pthread"
    )


def test_setup_without_root_stops_naming_exactly_what_is_missing_and_the_command(tmp_path: Path) -> None:
    folder = stub_path(tmp_path, root=False, tools=("apt-get", "shellcheck"))

    result = setup_system(folder, "test")

    assert result.returncode == 1
    message = result.stderr
    assert message.startswith("error: 'make test' needs what this machine lacks:\n  - Chromium")
    assert "shellcheck (the script tests)" not in message  # present: not named
    assert "Java" not in message
    assert (
        "Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y "
        "chromium nodejs npm libopenblas0-pthread" in message
    )
    assert "Amazon Linux:  sudo dnf install -y nodejs npm openblas" in message
    assert "(Amazon Linux has no package for: chromium)" in message


def test_setup_for_make_run_only_warns_about_a_missing_lapack(tmp_path: Path) -> None:
    folder = stub_path(tmp_path, root=False)

    result = setup_system(folder, "run")

    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: no native LAPACK: ")
    assert "sudo apt-get install -y libopenblas0-pthread" in result.stderr
    # A browser named by CHROMIUM counts as Chromium for the tests.
    check = setup_system(folder, "--check", "test", extra_env={"CHROMIUM": str(folder / "java")})
    assert "setup: chromium   present: " in check.stdout


def test_setup_as_root_installs_what_is_missing_once_and_quietly(tmp_path: Path) -> None:
    folder = stub_path(tmp_path, root=True)
    calls = tmp_path / "apt-get.calls"
    # The stub "installs" a package by putting a command of that name on PATH (nodejs: node).
    stub(
        folder,
        "apt-get",
        f'echo "$*" >> {calls}\n'
        f'if [ "$1" = install ]; then for p in "$@"; do case $p in -*) ;; *) c=${{p/nodejs/node}}; '
        f'printf "#!/bin/bash\\nexit 0\\n" > {folder}/$c; chmod +x {folder}/$c;; esac; done; fi',
    )

    first = setup_system(folder, "test")
    second = setup_system(folder, "test")

    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    assert first.stderr.splitlines()[0].startswith(
        "setup: installing chromium shellcheck nodejs npm libopenblas0-pthread with apt-get (once; log: "
    )
    assert calls.read_text().splitlines() == [
        "update -qq",
        "install -y -qq chromium shellcheck nodejs npm libopenblas0-pthread",
    ]
    assert len(first.stderr.splitlines()) == 1  # all there now: no warning
    assert second.returncode == 0
    assert "installing" not in second.stderr
    assert calls.read_text().count("install -y") == 1  # present now: not installed again


def test_the_driver_jvm_runs_c1_only_and_maps_the_class_archive_once_it_exists(tmp_path: Path) -> None:
    archive = tmp_path / "spark-driver.jsa"

    assert driver_java_options(archive) == "-XX:TieredStopAtLevel=1"
    assert (
        driver_java_options(archive, dump=True)
        == f"-XX:TieredStopAtLevel=1 -XX:ArchiveClassesAtExit={archive} -Xlog:cds*=error"
    )
    archive.write_bytes(b"")
    assert driver_java_options(archive) == f"-XX:TieredStopAtLevel=1 -XX:SharedArchiveFile={archive}"
    command = job_command("extract_features", java_options=driver_java_options(None))
    assert command[command.index("--driver-java-options") + 1] == "-XX:TieredStopAtLevel=1"
    assert "--driver-java-options" not in job_command("extract_features", java_options="")
