"""What an EC2 instance type's CPU means for the job's engines, known from its family name before
anything is launched.

- Graviton (``m7g``, ``c7gn``, ``r8g``, ``m6gd``, ...: a ``g`` after the generation) is aarch64:
  OpenVINO publishes no aarch64 wheel for Amazon Linux's glibc, and the packed environment holds
  x86_64 wheels, so such core nodes are refused for ``auto``/``openvino`` and for any packed
  environment.
- Intel from the 7th generation on (``m7i``, ``c7i``, ``r7iz``, ``m8i``, ...) has AMX, and AMD from
  the 7th (``m7a``, ``c7a``, ``m8a``, ...) AVX-512 BF16: there ``model.engine: auto`` runs OpenVINO
  bf16 (native bf16, about 2x ONNX Runtime fp32 per core: docs/engines.md); elsewhere ONNX Runtime fp32.

The executors decide at run time from the CPU they find (``model.engine: auto``); this only says
in advance what they will find.
"""

from __future__ import annotations

import re
from typing import Literal

from fruits_features.errors import ConfigError

Cpu = Literal["graviton", "amx", "avx512_bf16", "x86"]

_GRAVITON = re.compile(r"^[a-z]+\d+g[a-z]*(-flex)?\.")
_AMX = re.compile(r"^[a-z]+([7-9]|\d{2})i[a-z]*(-flex)?\.")
_AVX512_BF16 = re.compile(r"^[a-z]+([7-9]|\d{2})a[a-z]*(-flex)?\.")


def cpu_of(instance_type: str) -> Cpu:
    """The kind of CPU an instance type's family has, as far as the engines care."""
    if _GRAVITON.match(instance_type):
        return "graviton"
    if _AMX.match(instance_type):
        return "amx"
    if _AVX512_BF16.match(instance_type):
        return "avx512_bf16"
    return "x86"


def check_instance(instance_type: str, engine: str, *, packed: bool) -> str:
    """Refuse a core instance type the job cannot run on; otherwise say what ``engine`` runs there.

    Args:
        instance_type: the core nodes' type, e.g. ``m7i.4xlarge``.
        engine: the job's ``model.engine``.
        packed: whether the nodes get the packed (x86_64) environment.

    Raises:
        ConfigError: an aarch64 (Graviton) type with OpenVINO or the packed environment.
    """
    cpu = cpu_of(instance_type)
    if cpu == "graviton":
        if engine in {"auto", "openvino"}:
            raise ConfigError(
                f"cluster.core.instance_type {instance_type} is Graviton (aarch64): OpenVINO has no aarch64 "
                f"wheel for Amazon Linux, so model.engine {engine} cannot run there; use an x86_64 type "
                "(m7i: AMX) or model.engine onnxruntime with a dist/ built without a packed environment"
            )
        if packed:
            raise ConfigError(
                f"cluster.core.instance_type {instance_type} is Graviton (aarch64), and the packed "
                "environment holds x86_64 wheels: use an x86_64 type, or build dist/ on aarch64"
            )
        return f"{instance_type}: Graviton (aarch64), model.engine {engine}"
    if engine != "auto":
        return f"{instance_type}: model.engine {engine}"
    if cpu in {"amx", "avx512_bf16"}:
        flag = "AMX" if cpu == "amx" else "AVX-512 BF16"
        return f"{instance_type}: {flag}, so model.engine auto runs OpenVINO bf16"
    return f"{instance_type}: no native bf16, so model.engine auto runs ONNX Runtime fp32 (m7i: AMX, bf16)"
