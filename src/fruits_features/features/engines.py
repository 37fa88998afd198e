"""The engines that run the backbone's forward pass on the executors.

- ``tensorflow``: Keras' ResNet50 (no top, average pooling) built from the weights, its call
  wrapped in ``tf.function`` with one fixed signature (ResNet50 only).
- ``onnxruntime``: the backbone exported to ONNX (:mod:`fruits_features.features.onnx_export`,
  :mod:`fruits_features.features.lite2_export`), run by ONNX Runtime's CPU provider. Its
  executors never import TensorFlow or PyTorch.
- ``openvino``: the same ONNX file read and compiled by OpenVINO for the CPU, in fp32 or bf16
  (``model.precision``; ``auto``: bf16 where the CPU has native bf16 matrix support, as OpenVINO
  reports it in ``OPTIMIZATION_CAPABILITIES``, and bf16 measured faster than fp32 on such CPUs:
  AMX, or AMD's AVX-512 BF16; see :func:`bf16_pays`).
- ``auto``: each executor decides for itself (a cluster can mix instance types): OpenVINO bf16
  where it pays (as above) and OpenVINO is installed, ONNX Runtime fp32 elsewhere.

All take the same input, the backbone's preprocessing of RGB pixels
(:mod:`fruits_features.features.backbones`), and give the same features (2048 for ResNet50, 1280
for EfficientNet-Lite2). Each uses the cores Spark gives a task (``spark.task.cpus``,
or ``model.threads`` when set) for its intra-op threads and one inter-op thread: with several
Python workers per machine, more would oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from fruits_features.features.backbones import DEFAULT_BACKBONE, Backbone, BackboneName, backbone
from fruits_features.features.model_files import local_file, quiet_tensorflow
from fruits_features.io.s3 import S3Settings

log = logging.getLogger(__name__)

Engine = Literal["tensorflow", "onnxruntime", "openvino", "auto"]
Precision = Literal["fp32", "bf16", "auto"]
ModelFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EmbedSpec:
    """Everything an executor needs to build the model and run it; hashable, no secrets.

    ``onnx`` is the ONNX file (local path or ``s3://``) for every engine but ``tensorflow``.
    """

    weights: str
    image_size: int
    batch_size: int
    threads: int
    max_image_pixels: int
    s3: S3Settings = field(default_factory=S3Settings)
    engine: Engine = "tensorflow"
    onnx: str | None = None
    precision: Precision = "auto"
    backbone: BackboneName = DEFAULT_BACKBONE

    @property
    def network(self) -> Backbone:
        """The backbone's feature size and preprocessing."""
        return backbone(self.backbone)


# The /proc/cpuinfo flags that decide which engine and precision is fastest: AVX2 and AVX-512
# (fp32), AVX-512 BF16 and AMX (native bf16), AMX and VNNI (int8).
MATRIX_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


@dataclass(frozen=True)
class ResolvedEngine:
    """What an executor runs: the engine, its precision and the CPU it went by.

    ``capabilities`` is OpenVINO's ``OPTIMIZATION_CAPABILITIES`` (only the ``openvino`` and
    ``auto`` engines probe them); ``cpu_flags`` the CPU's :data:`MATRIX_FLAGS`, read for every engine.
    """

    engine: Literal["tensorflow", "onnxruntime", "openvino"]
    precision: Literal["fp32", "bf16"]
    capabilities: tuple[str, ...]
    cpu_flags: tuple[str, ...] = ()

    def describe(self) -> str:
        """``openvino bf16 (CPU: avx2 avx512f amx_bf16; OpenVINO: FP32 BF16 INT8)``: the manifest's
        key for the tasks that ran it."""
        cpu = f"CPU: {' '.join(self.cpu_flags) or 'unknown'}"
        if self.capabilities:
            cpu += f"; OpenVINO: {' '.join(self.capabilities)}"
        return f"{self.engine} {self.precision} ({cpu})"


def matrix_flags(cpuinfo: str) -> tuple[str, ...]:
    """The :data:`MATRIX_FLAGS` among the first ``flags`` line of a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return tuple(flag for flag in MATRIX_FLAGS if flag in present)
    return ()


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """This machine's :data:`MATRIX_FLAGS`; ``()`` where ``/proc/cpuinfo`` cannot be read (not Linux)."""
    try:
        return matrix_flags(Path(cpuinfo).read_text())
    except OSError:
        return ()


def openvino_capabilities() -> tuple[str, ...]:
    """The CPU's ``OPTIMIZATION_CAPABILITIES`` as OpenVINO reports them; ``()`` without OpenVINO."""
    try:
        import openvino
    except ImportError:
        return ()
    return tuple(str(c) for c in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """``GenuineIntel``, ``AuthenticAMD``, ...: the first ``vendor_id`` of ``/proc/cpuinfo``; ``""``
    where it cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return ""


def bf16_pays(vendor: str, flags: tuple[str, ...]) -> bool:
    """Whether OpenVINO's bf16 ran faster than its fp32 on CPUs like this one, as measured by
    ``make bench`` (docs/engines.md, "Precision"): with AMX (``amx_bf16``) and on AMD's AVX-512
    BF16 (Zen 4/5: 2x fp32); not on an Intel Xeon with AVX-512 BF16 but no AMX, where OpenVINO
    reports ``BF16`` and bf16 ran at 0.6-0.7x its fp32."""
    if "amx_bf16" in flags:
        return True
    return vendor == "AuthenticAMD" and "avx512_bf16" in flags


def resolve_engine(
    engine: Engine,
    precision: Precision,
    probe: Callable[[], tuple[str, ...]] = openvino_capabilities,
    cpu: Callable[[], tuple[str, tuple[str, ...]]] | None = None,
) -> ResolvedEngine:
    """The engine and precision this machine runs for the configured ``engine`` and ``precision``.

    ``probe`` reports OpenVINO's view of the CPU and ``cpu`` its vendor and flags (tests pass their
    own answers). ``auto`` chooses bf16 only where the CPU has it natively (``BF16`` in the
    capabilities) and bf16 measured faster there (:func:`bf16_pays`); bf16 asked for by name runs
    whatever the CPU (OpenVINO then runs it as it can).
    """
    vendor, flags = cpu() if cpu is not None else (cpu_vendor(), cpu_flags())
    if engine in ("tensorflow", "onnxruntime"):
        return ResolvedEngine(engine, "fp32", (), flags)
    capabilities = probe()
    fast_bf16 = "BF16" in capabilities and bf16_pays(vendor, flags)
    if engine == "openvino":
        chosen = precision if precision != "auto" else ("bf16" if fast_bf16 else "fp32")
        return ResolvedEngine("openvino", chosen, capabilities, flags)
    # auto: OpenVINO bf16 where it pays; the fp32 engine `make bench` measured fastest elsewhere.
    if fast_bf16 and precision != "fp32":
        return ResolvedEngine("openvino", "bf16", capabilities, flags)
    return ResolvedEngine("onnxruntime", "fp32", capabilities, flags)


_RESOLVED: dict[tuple[Engine, Precision], ResolvedEngine] = {}


def resolved_engine(spec: EmbedSpec) -> ResolvedEngine:
    """:func:`resolve_engine` for ``spec``, probed once per process."""
    key = (spec.engine, spec.precision)
    if key not in _RESOLVED:
        _RESOLVED[key] = resolve_engine(spec.engine, spec.precision)
    return _RESOLVED[key]


def machine_cpus() -> int:
    """This machine's cores: the threads an engine takes when ``EmbedSpec.threads`` is 0 (the UDF
    resolves 0 to the task's cores before it builds the model)."""
    return max(1, os.cpu_count() or 1)


def build_keras_fn(spec: EmbedSpec) -> ModelFn:
    """Build ResNet50 (no top, average pooling) and wrap its forward pass in ``tf.function``."""
    if spec.backbone != "resnet50":
        raise ValueError(f"the tensorflow engine runs ResNet50 only, not {spec.network.title}")
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    threads = spec.threads or machine_cpus()
    with contextlib.suppress(RuntimeError):  # already set by an earlier model in this process
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    started = time.perf_counter()
    model = keras.applications.ResNet50(
        include_top=False,
        weights=local_file(spec.weights, spec.s3),
        input_shape=(spec.image_size, spec.image_size, 3),
        pooling="avg",
    )
    # A fixed signature with an open batch dimension: one trace serves every batch size, so
    # the last, shorter batch of a partition does not retrace.
    signature = [tf.TensorSpec([None, spec.image_size, spec.image_size, 3], tf.float32)]
    compiled = tf.function(lambda x: model(x, training=False), input_signature=signature)
    _log_ready("built ResNet50 with TensorFlow", spec.weights, spec, threads, started)

    def call(batch: np.ndarray) -> np.ndarray:
        return compiled(tf.convert_to_tensor(batch)).numpy()  # type: ignore[no-any-return]

    return call


def build_onnx_fn(spec: EmbedSpec) -> ModelFn:
    """Open the exported backbone in an ONNX Runtime CPU session."""
    import onnxruntime as ort

    if spec.onnx is None:
        raise ValueError("the onnxruntime engine needs the ONNX file (EmbedSpec.onnx)")
    threads = spec.threads or machine_cpus()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    started = time.perf_counter()
    session = ort.InferenceSession(
        local_file(spec.onnx, spec.s3), options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    _log_ready(f"opened {spec.network.title} with ONNX Runtime", spec.onnx, spec, threads, started)

    def call(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: batch})[0])

    return call


def build_openvino_fn(spec: EmbedSpec, precision: Literal["fp32", "bf16"]) -> ModelFn:
    """Compile the exported backbone with OpenVINO for this CPU, in ``precision``.

    One stream with the task's threads and the latency hint, threads not pinned: each Spark task
    is one synchronous caller, and several tasks share a machine's cores.
    """
    import openvino

    if spec.onnx is None:
        raise ValueError("the openvino engine needs the ONNX file (EmbedSpec.onnx)")
    threads = spec.threads or machine_cpus()
    started = time.perf_counter()
    core = openvino.Core()
    model = core.read_model(local_file(spec.onnx, spec.s3))
    compiled = core.compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            # OpenVINO pins its threads to cores by default, each process alike: two Spark tasks of
            # one thread then share one core (measured: 4.8 images/s each instead of 8.4-10.1).
            "ENABLE_CPU_PINNING": False,
        },
    )
    request = compiled.create_infer_request()
    output = compiled.output(0)
    _log_ready(
        f"compiled {spec.network.title} with OpenVINO ({precision})", spec.onnx, spec, threads, started
    )

    def call(batch: np.ndarray) -> np.ndarray:
        # infer() copies the outputs (share_outputs=False): the next call cannot overwrite them.
        return np.asarray(request.infer({0: batch})[output], dtype=np.float32)

    return call


def _log_ready(what: str, source: str, spec: EmbedSpec, threads: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    log.info("%s (%s, %dpx, %d threads) in %.1fs", what, source, spec.image_size, threads, elapsed)


def build_model_fn(spec: EmbedSpec) -> ModelFn:
    """The forward pass of ``spec.engine``: float32 ``(n, s, s, 3)`` preprocessed -> ``(n, features)``."""
    resolved = resolved_engine(spec)
    if resolved.engine == "openvino":
        return build_openvino_fn(spec, resolved.precision)
    if resolved.engine == "onnxruntime":
        return build_onnx_fn(spec)
    return build_keras_fn(spec)
