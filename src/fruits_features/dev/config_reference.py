"""``docs/configuration.md``, written from the config model's own field descriptions.

``python -m fruits_features.dev.config_reference`` (``make docs``) rewrites the file; ``--check``
exits 1 when it is stale. A test runs the check, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from fruits_features.config import JobConfig

TARGET = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"

INTRO = """# Configuration reference

<!-- Written by `make docs` (python -m fruits_features.dev.config_reference) from the field
descriptions in src/fruits_features/config.py: edit those, not this file. A test fails when it is stale. -->

A job reads one YAML file (`--config`: `conf/local.yaml`, `conf/ec2.yaml` or `conf/emr.yaml`), then
applies `--input`, `--output` and every `--set section.key=value` (the value is read as YAML: `--set
pca.k=10` is a number). Every key is checked before Spark starts: an unknown key, a wrong type or a value out
of range is a one-line error naming the key (exit 2). The effective configuration is recorded in the run's
`manifest.json` under `config`.
"""


def _type(field: FieldInfo) -> str:
    annotation = field.annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    names = {int: "integer", float: "number", bool: "boolean", str: "text"}
    if annotation in names:
        kind = names[annotation]
    elif args and set(args) - {type(None)} <= set(names):
        kind = " or ".join(names[a] for a in args if a is not type(None))
        kind += ", or unset" if type(None) in args else ""
    elif typing.get_origin(annotation) is tuple:
        kind = "list of text"
    elif typing.get_origin(annotation) is dict:
        kind = "mapping"
    else:
        kind = "see the meaning"
    bounds = []
    for item in field.metadata:
        for attribute, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attribute.capitalize())):
                bounds.append(f"{sign} {getattr(item, attribute)}")
    return f"{kind} ({', '.join(bounds)})" if bounds else kind


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value: Any = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value)}`"


def _rows(model: type[BaseModel], prefix: str, only: list[str] | None = None) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if only is not None and name not in only:
            continue
        if not field.description:
            raise ValueError(f"config key '{prefix}{name}' has no description: add one in config.py")
        text = field.description.replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{prefix}{name}` | {_type(field)} | {_default(field)} | {text} |")
    return rows


def render() -> str:
    """The whole reference: one table per section, then the top-level keys."""
    parts = [INTRO]
    header = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    top: list[str] = []
    for name, field in JobConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            doc = (section.__doc__ or "").strip().splitlines()[0].replace("``", "`")
            parts.append(
                f"## `{name}`\n\n{doc}\n\n" + "\n".join([*header, *_rows(section, f"{name}.")]) + "\n"
            )
        else:
            top.append(name)
    parts.append("## Top-level keys\n\n" + "\n".join([*header, *_rows(JobConfig, "", top)]) + "\n")
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale; write nothing")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
