"""The two engines that run ResNet50's forward pass on the executors.

- ``tensorflow``: Keras' ResNet50 (no top, average pooling) built from the weights, its call
  wrapped in ``tf.function`` with one fixed signature.
- ``onnxruntime``: the same model exported to ONNX (:mod:`fruits_features.onnx_model`), run by
  ONNX Runtime's CPU provider. Its executors never import TensorFlow.

Both take the same input, ResNet50's "caffe" preprocessing of RGB pixels (:func:`preprocess`),
and give the same 2048 features. Each uses the cores Spark gives a task (``spark.task.cpus``,
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
from typing import Literal

import numpy as np

from fruits_features.storage import S3Settings
from fruits_features.weights import local_file, quiet_tensorflow

log = logging.getLogger(__name__)

FEATURE_DIM = 2048
Engine = Literal["tensorflow", "onnxruntime"]
ModelFn = Callable[[np.ndarray], np.ndarray]

# ImageNet channel means, in BGR order, that keras.applications.resnet50.preprocess_input
# subtracts ("caffe" mode); tests check this against Keras' own function.
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


@dataclass(frozen=True)
class EmbedSpec:
    """Everything an executor needs to build the model and run it; hashable, no secrets.

    ``onnx`` is the ONNX file (local path or ``s3://``) for the ``onnxruntime`` engine.
    """

    weights: str
    image_size: int
    batch_size: int
    threads: int
    max_image_pixels: int
    s3: S3Settings = field(default_factory=S3Settings)
    engine: Engine = "tensorflow"
    onnx: str | None = None


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """ResNet50's input from uint8 RGB ``(n, s, s, 3)``: BGR, ImageNet means subtracted, float32.

    The same arithmetic as ``keras.applications.resnet50.preprocess_input``, without importing
    Keras (and TensorFlow) into an executor that runs the ONNX engine.
    """
    return pixels[..., ::-1].astype(np.float32) - _CAFFE_MEAN_BGR


def task_cpus() -> int:
    """The cores Spark gives the current task (all of this machine's outside a task)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, context.cpus()) if context is not None else max(1, os.cpu_count() or 1)


def build_keras_fn(spec: EmbedSpec) -> ModelFn:
    """Build ResNet50 (no top, average pooling) and wrap its forward pass in ``tf.function``."""
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    threads = spec.threads or task_cpus()
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
    """Open the exported ResNet50 in an ONNX Runtime CPU session."""
    import onnxruntime as ort

    if spec.onnx is None:
        raise ValueError("the onnxruntime engine needs the ONNX file (EmbedSpec.onnx)")
    threads = spec.threads or task_cpus()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    started = time.perf_counter()
    session = ort.InferenceSession(
        local_file(spec.onnx, spec.s3), options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    _log_ready("opened ResNet50 with ONNX Runtime", spec.onnx, spec, threads, started)

    def call(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: batch})[0])

    return call


def _log_ready(what: str, source: str, spec: EmbedSpec, threads: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    log.info("%s (%s, %dpx, %d threads) in %.1fs", what, source, spec.image_size, threads, elapsed)


def build_model_fn(spec: EmbedSpec) -> ModelFn:
    """The forward pass of ``spec.engine``: float32 ``(n, s, s, 3)`` preprocessed -> ``(n, 2048)``."""
    if spec.engine == "onnxruntime":
        return build_onnx_fn(spec)
    return build_keras_fn(spec)
