"""The GPU check of issue 16, ready to run on a GPU machine: one command, one JSON.

    python launch/gpu_check.py --data_dir=<folder with the MNIST IDX files> --out=gpu_check.json

1. Steps per second of every method, custom loop, on the paper network (784-5×256-10, batch 128), with
   N = 1 and N = the whole epoch, XLA off and on.
2. The host-bound proxy (784-32-10, batch 32) for bp, ddtp_linear and dtpdrl, N = 1 and N = 100, loop and fit,
   XLA off and on (1 and 2: tp_keras.loop_bench.figures, as `python -m tp_keras.bench --loop` prints them).
3. A full MNIST DDTP-linear run with its feedback pre-training (the paper's configuration, --epochs epochs, 100 by
   default) through tp_keras.experiment with the device's defaults, timed end to end.

Every figure goes into the one JSON file (with the machine and TensorFlow's devices). The tests run it on a CPU
with tiny sizes (--tiny).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository, when run as a file

from tp_keras import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder with the four MNIST IDX .gz files.")
flags.DEFINE_string("out", "gpu_check.json", "The JSON file written.")
flags.DEFINE_integer("epochs", 100, "Epochs of the DDTP-linear run.")
flags.DEFINE_bool("tiny", False, "Tiny sizes (a CPU test of the script): one method, few samples, 2 epochs.")


def main(argv):
    del argv
    cli.quiet_tensorflow_without_gpu()
    import tensorflow as tf

    from tp_keras.run import loop_bench
    from tp_keras.run.config import Config
    from tp_keras.run.experiment import train_and_evaluate
    from tp_keras.core.methods import METHODS
    tiny = FLAGS.tiny
    report = {"machine": platform.machine(), "cpus": os.cpu_count(), "tensorflow": tf.__version__,
              "devices": [d.name for d in tf.config.list_physical_devices()]}
    report.update(loop_bench.figures(
        ["ddtp_linear"] if tiny else ["bp", "ddtp_linear", "dtpdrl"], xla_settings=[False, True],
        paper_methods=["ddtp_linear"] if tiny else list(METHODS), paper_samples=160 if tiny else 55000,
        paper_batch_size=16 if tiny else 128, paper_hidden=[16, 16] if tiny else [256] * 5,
        proxy_samples=160 if tiny else 32000, proxy_batch_size=8 if tiny else 32,
        proxy_steps_per_call=4 if tiny else 100))
    settings = dict(data_dir=FLAGS.data_dir, epochs=2 if tiny else FLAGS.epochs, progress=not tiny)
    if tiny:
        settings.update(num_hidden=2, size_hidden=8, batch_size=16, validation_size=20, epochs_fb=1)
    config = Config.paper("ddtp_linear", **settings)
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        summary = train_and_evaluate(config, workdir)
        report["ddtp_linear_run"] = {"epochs": config.epochs, "epochs_fb": config.epochs_fb,
                                     "wall_seconds": time.perf_counter() - start, "summary": dict(summary)}
    with open(FLAGS.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(f"gpu_check: wrote {FLAGS.out}; DDTP-linear run {report['ddtp_linear_run']['wall_seconds']:.1f} s")


if __name__ == "__main__":
    flags.mark_flag_as_required("data_dir")
    app.run(main, flags_parser=cli.parse_flags_one_line)
