"""Reading a job's configuration: the YAML file, ``--set section.key=value`` overrides, and
validation errors as one line naming the key (exit 2). No I/O beyond the local file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fruits_features.config import JobConfig
from fruits_features.errors import ConfigError


def _format_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif "input" in first and first["type"] not in {"value_error"}:
        message = f"{message} (got {first['input']!r})"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"config key '{key}': {message}{suffix}"


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    # The value is parsed as YAML so that numbers and booleans get their types
    # (`pca.k=10` is an int), while paths and URIs stay strings.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if value is None or isinstance(value, dict):
        value = raw  # "a: b" in a path is text, not a mapping
    path = key.strip().split(".")
    if path[:2] == ["spark", "conf"] and len(path) > 2:
        # Spark's own keys contain dots: spark.conf.spark.task.cpus=2 sets "spark.task.cpus".
        path = ["spark", "conf", ".".join(path[2:])]
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``section.key=value`` override applied.

    Args:
        data: the configuration as read from YAML.
        overrides: items such as ``"model.weights=/path/w.h5"`` or ``"pca.k=10"``.

    Returns:
        A new nested dict; ``data`` is left untouched.

    Raises:
        ConfigError: if an item is not of the form ``key=value`` or walks into a non-section.
    """
    result: dict[str, Any] = _deep_copy(data)
    for item in overrides:
        path, value = _parse_override(item)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config key '{'.'.join(path)}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a config file into a dict.

    Raises:
        ConfigError: if the file is missing, is not YAML, or is not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    return data


def build_config(data: Mapping[str, Any]) -> JobConfig:
    """Validate plain data into a :class:`JobConfig`.

    Raises:
        ConfigError: naming the first offending key.
    """
    try:
        return JobConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from exc


def load_config(
    path: Path,
    *,
    input_uri: str | None = None,
    output_uri: str | None = None,
    overrides: Iterable[str] = (),
) -> JobConfig:
    """Read, override and validate the job configuration.

    Args:
        path: the YAML file (``conf/local.yaml``, ``conf/ec2.yaml``, ``conf/emr.yaml``).
        input_uri: replaces ``input.uri`` when given (``--input``).
        output_uri: replaces ``output.uri`` when given (``--output``).
        overrides: ``section.key=value`` items (``--set``), applied last.

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: for a missing file, an unknown key, a wrong type or a malformed URI.
    """
    data = read_yaml(path)
    for section, uri in (("input", input_uri), ("output", output_uri)):
        if uri is None:
            continue
        node = data.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{section}': must be a section")
        node["uri"] = uri  # verbatim: a URI is never parsed as YAML
    return build_config(apply_overrides(data, overrides))
