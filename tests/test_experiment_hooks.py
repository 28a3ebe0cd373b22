"""train_and_evaluate's per-epoch hook (what a hyper-parameter search prunes with)."""
import json

import pytest

from tp_keras.run.config import Config

TINY = dict(num_hidden=2, size_hidden=8, batch_size=16, validation_size=20, progress=False)


@pytest.mark.slow
def test_on_epoch_end_sees_every_epoch_and_can_stop_the_run(mnist_dir, tmp_path):
    from tp_keras.run.experiment import train_and_evaluate
    config = Config.paper("ddtp_linear", data_dir=mnist_dir, epochs=4, epochs_fb=1, extra_fb_epochs=0, **TINY)
    seen = []

    def hook(row):
        seen.append(row["epoch"])
        return "pruned: stopped by the hook" if row["epoch"] == 2 else None

    summary = train_and_evaluate(config, str(tmp_path), on_epoch_end=hook)
    assert seen == [1, 2]  # training epochs only (not the pre-training row), none after the stop
    assert summary["status"] == "pruned: stopped by the hook"
    assert summary["epochs_run"] == 2
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == summary["status"]


@pytest.mark.parametrize("tf32", [False, True])
def test_the_run_sets_tensorflow_tf32_switch_from_its_config_and_restores_it(mnist_dir, tmp_path, tf32):
    # TF32 (float32 matmuls at ~1e-3 relative error on NVIDIA GPUs from Ampere on) is TensorFlow's default; a run
    # turns it off unless config.tf32, as the reference computes in full float32. The switch is process-wide, so
    # the run puts back what it found.
    import tensorflow as tf

    from tp_keras.run.experiment import train_and_evaluate
    config = Config.paper("bp", data_dir=mnist_dir, epochs=1, tf32=tf32, **TINY)
    during = []
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(not tf32)
    try:
        train_and_evaluate(config, str(tmp_path), on_epoch_end=lambda row: during.append(
            tf.config.experimental.tensor_float_32_execution_enabled()))
        assert during == [tf32]
        assert tf.config.experimental.tensor_float_32_execution_enabled() is (not tf32)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)
