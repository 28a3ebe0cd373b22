"""MultiWorkerMirroredStrategy with two worker processes on one machine (TF_CONFIG, free localhost ports, tiny
data).

The launcher's path (`DistributedTrainer.from_config` + `train_and_evaluate`) trains both workers to identical
weights, equal to one process's to float32 rounding; only the chief (worker 0) writes its workdir; and Keras
`fit` under the real strategy is refused in one line.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow

WEIGHT_ATOL = 1e-5  # float32, the same bound as the MirroredStrategy equivalence tests

_WORKER = textwrap.dedent(r'''
    import json, os, sys
    import numpy as np
    from tp_keras.run import distribute, experiment, factories
    from tp_keras.run.config import Config
    from tp_keras.run.data import Dataset, Split

    workdir, weights_out = sys.argv[1], sys.argv[2]
    multi = "TF_CONFIG" in os.environ
    strategy = distribute.make_strategy("multi_worker") if multi else None  # before TensorFlow runs anything
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 7)).astype("float32")
    y = (np.arange(24) % 3).astype("int32")
    dataset = Dataset("tiny", Split(x, y), Split(x[:8], y[:8]), Split(x, y), 3, "classification", (7,))
    config = Config.paper("dtpdrl", num_hidden=2, size_hidden=5, epochs=2, epochs_fb=1, extra_fb_epochs=1,
                          batch_size=8, seed=3, progress=False)
    if multi:
        trainer = distribute.DistributedTrainer.from_config(config, dataset, strategy)
    else:
        trainer = factories.build_trainer(config, factories.build_model(config, dataset))
    summary = experiment.train_and_evaluate(config, workdir, dataset, trainer)
    np.savez(weights_out, *[np.asarray(v.numpy()) for v in trainer.model.weights])
    refusal = None
    if multi:
        from tp_keras.core.model import TPModel
        with strategy.scope():
            model = TPModel("ddtp_linear", 7, [5], 3, sigma=0.1, target_stepsize=0.1)
            model.compile(optimizer="adam")
        try:
            model.fit(x, y, verbose=0)
        except ValueError as err:
            refusal = str(err)
    print("RESULT " + json.dumps({"status": summary["status"], "refusal": refusal,
                                  "chief": factories.is_chief(strategy) if multi else True}), flush=True)
''')


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _result(output: str) -> dict:
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _weights(path):
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def test_two_workers_train_identically_match_one_process_and_only_the_chief_writes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    procs = []
    for index in range(2):
        worker_env = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"run_{index}"), str(tmp_path / f"weights_{index}.npz")],
            env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single"), str(tmp_path / "weights.npz")],
                            env=env, capture_output=True, text=True, timeout=600)
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=600)[0])
        finally:
            proc.kill()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]

    results = [_result(output) for output in outputs]
    assert [r["chief"] for r in results] == [True, False]
    assert all(r["status"] == "finished" for r in results)
    for r in results:  # the real strategy, refused before Keras touches it
        assert r["refusal"].startswith("fit under MultiWorkerMirroredStrategy is not supported")
        assert "--strategy=multi_worker" in r["refusal"] and "\n" not in r["refusal"]

    chief, other, alone = (_weights(tmp_path / name) for name in ("weights_0.npz", "weights_1.npz", "weights.npz"))
    for a, b, c in zip(chief, other, alone):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=0, atol=WEIGHT_ATOL)

    written = sorted(os.listdir(tmp_path / "run_0"))
    assert {"summary.json", "metrics.jsonl", "checkpoint.npz", "config.json", "tb"} <= set(written)
    assert not (tmp_path / "run_1").exists() or not os.listdir(tmp_path / "run_1")
    with open(tmp_path / "run_0" / "summary.json") as f, open(tmp_path / "single" / "summary.json") as g:
        ours, reference = json.load(f), json.load(g)
    assert ours["epochs_run"] == reference["epochs_run"] == 2
    assert ours["loss_train_last"] == pytest.approx(reference["loss_train_last"], rel=1e-4)
