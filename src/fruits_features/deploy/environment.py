"""The job's Python environment for one engine, packed once: ``dist/environment-<engine>.tar.gz``.

What the nodes unpack instead of installing from PyPI (the EMR bootstrap), and what Spark ships to
executors with ``--archives dist/environment-<engine>.tar.gz#environment`` and
``PYSPARK_PYTHON=./environment/bin/python`` (EMR Serverless, a standalone cluster):

1. ``requirements-emr-<engine>.lock``: the engine's pins (``requirements-emr-<engine>.txt``, from
   ``constraints.txt``) with the SHA-256 of every file PyPI publishes for each, written by
   ``uv pip compile --generate-hashes`` for Linux x86_64 and the nodes' Python;
2. a new venv of that Python, where pip installs the lock with ``--require-hashes`` (a file whose
   hash is not in the lock is refused) and binary wheels only, then the project's wheel without
   dependencies; the job's libraries must import;
3. its interpreter is linked to ``<python prefix>/bin/python3.X`` and ``venv-pack`` packs it: the
   archive holds the libraries, not Python itself, so every node needs that Python at that path
   (``/usr/bin/python3.11`` on Amazon Linux 2023: ``dnf install python3.11``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from fruits_features.deploy.errors import PackageError

if TYPE_CHECKING:
    from fruits_features.deploy.package import Package

log = logging.getLogger(__name__)

# The platform the nodes run: EMR on EC2 and EMR Serverless x86_64 (Amazon Linux 2023, glibc 2.34).
PLATFORM = "x86_64-manylinux_2_28"
# What the packed environment must import, per engine.
IMPORTS = {
    "onnxruntime": "fruits_features, onnxruntime, pandas, pyarrow, PIL, boto3",
    "openvino": "fruits_features, onnxruntime, openvino, pandas, pyarrow, PIL, boto3",
    "auto": "fruits_features, onnxruntime, openvino, pandas, pyarrow, PIL, boto3",
    "tensorflow": "fruits_features, onnxruntime, tensorflow, keras, pandas, pyarrow, PIL, boto3",
}


def environment_name(engine: str) -> str:
    """``environment-<engine>.tar.gz``: the archive's file name in ``dist/``."""
    return f"environment-{engine}.tar.gz"


def lock_name(engine: str) -> str:
    """``requirements-emr-<engine>.lock``: the engine's pins with their hashes."""
    return f"requirements-emr-{engine}.lock"


def packed_environment(package: Package, engine: str) -> str | None:
    """The packed environment a submission with ``model.engine: engine`` ships, if ``package`` has one.

    Raises:
        PackageError: ``package`` holds another engine's environment.
    """
    if package.environment is None:
        return None
    if package.environment != environment_name(engine):
        raise PackageError(
            f"dist/ holds {package.environment} but the job's model.engine is {engine}: "
            f"run make package PACK_ENGINE={engine}"
        )
    return package.environment


def _run(command: list[str], what: str) -> str:
    log.debug("running %s", " ".join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PackageError(f"{what} failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    return result.stdout


def _tool(name: str) -> str:
    """A command installed beside this interpreter (the project's .venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise PackageError(f"{name} is not installed: run make setup (the dev extra brings it)")
    return found


def python_version(python: str) -> str:
    """``3.11``: the major.minor of the interpreter ``python``."""
    out = _run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], f"running {python}")
    return out.strip()


def write_lock(requirements: Path, lock: Path, version: str) -> None:
    """Pin ``requirements`` with the hash of every file of each version, for the nodes' platform."""
    _run(
        [
            _tool("uv"),
            *("pip", "compile", str(requirements), "--generate-hashes", "--no-header", "--quiet"),
            *("--python-version", version, "--python-platform", PLATFORM, "-o", str(lock)),
            # As in the requirement sets: the venv keeps the pip and setuptools its Python comes with.
            *(item for name in ("pip", "setuptools", "wheel") for item in ("--no-emit-package", name)),
        ],
        f"locking {requirements.name}",
    )
    listed, pinned = _pins(lock), _pins(requirements)
    if listed != pinned:
        differ = sorted(listed ^ pinned)
        raise PackageError(f"{lock.name} does not lock exactly {requirements.name}: {differ}")


def _pins(path: Path) -> set[tuple[str, str]]:
    """``(name, version)`` of each ``name==version`` line (hash and comment lines skipped)."""
    found: set[tuple[str, str]] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, rest = line.strip().partition("==")
        if sep and not name.startswith("#"):
            found.add((canonicalize_name(name), rest.split()[0].rstrip("\\").strip()))
    return found


def _link_interpreter(venv: Path, interpreter: str) -> None:
    """Point the venv at the nodes' interpreter: its ``bin/python3.X`` link and ``pyvenv.cfg``'s
    ``home``. (venv-pack's own ``--python-prefix`` rewrites a link to ``python3.X`` into
    ``python3.X3.X``: venv-pack 0.2.0 replaces the prefix ``<home>/python`` as a string.)"""
    for link in (venv / "bin").glob("python*"):
        if link.is_symlink() and Path(os.readlink(link)).is_absolute():
            link.unlink()
            link.symlink_to(interpreter)
    config = venv / "pyvenv.cfg"
    lines = config.read_text(encoding="utf-8").splitlines()
    home = f"home = {Path(interpreter).parent}"
    config.write_text("\n".join(home if line.startswith("home") else line for line in lines) + "\n")


def pack_environment(dist: Path, engine: str, wheel: Path, python: str, python_prefix: str) -> Path:
    """Build, check and pack the engine's environment into ``dist``; returns the archive.

    Args:
        dist: the built package folder (with ``requirements-emr-<engine>.txt``).
        engine: ``model.engine``.
        wheel: the project's wheel.
        python: the interpreter the venv is made with (the nodes' minor version).
        python_prefix: where the nodes have that Python (``/usr``: ``/usr/bin/python3.11``).

    Raises:
        PackageError: a failed lock, install, import check or pack.
    """
    version = python_version(python)
    lock = dist / lock_name(engine)
    write_lock(dist / f"requirements-emr-{engine}.txt", lock, version)
    archive = dist / environment_name(engine)
    with tempfile.TemporaryDirectory(prefix="fruits-features-env-") as scratch:
        venv = Path(scratch) / "venv"
        _run([python, "-m", "venv", str(venv)], "creating the venv")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input"]
        _run(
            [*pip, "--require-hashes", "--only-binary=:all:", "--no-deps", "-r", str(lock)],
            f"installing {lock.name} (hash-checked)",
        )
        _run([*pip, "--no-deps", str(wheel)], f"installing {wheel.name}")
        _run([str(venv / "bin" / "python"), "-c", f"import {IMPORTS[engine]}"], "the import check")
        _link_interpreter(venv, f"{python_prefix.rstrip('/')}/bin/python{version}")
        archive.unlink(missing_ok=True)
        _run(
            [_tool("venv-pack"), *("--prefix", str(venv), "--output", str(archive)), "--quiet"],
            "venv-pack",
        )
    log.info(
        "packed %s: Python %s (linked to %s/bin/python%s), %.0f MB",
        archive.name,
        version,
        python_prefix,
        version,
        archive.stat().st_size / 1e6,
    )
    return archive
