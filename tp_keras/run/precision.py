"""The run's precision switches that live outside the model: TensorFloat-32 (Ampere and later GPUs' reduced-mantissa
float32 matmuls and convolutions; `Config.tf32`, `--tf32`), set for one run and restored after it. The model's own
precision (float32 / float64) is its dtype (`Config.precision`, `TPModel(dtype=...)`)."""
from __future__ import annotations

import contextlib

import tensorflow as tf


@contextlib.contextmanager
def tensor_float_32(enabled: bool):
    """TF32 on or off while the block runs; the setting from before afterwards."""
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(enabled)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)
