"""launch/colab_tpu.ipynb runs as written: its code cells are executed here on the CPU, top to bottom, with the TPU
strategy swapped for TensorFlow's default one and the datasets for tiny ones; only the install cell (marked) is
skipped, and its contents are checked instead (the TPU build of TensorFlow, tp_keras without its `tensorflow`
requirement and not editable, every other requirement of setup.cfg)."""
import ast
import configparser
import importlib
import importlib.util
import json
import os
import re

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "launch", "colab_tpu.ipynb")
INSTALL_MARKER = "# tp_keras-notebook: install"


def _code_cells():
    with open(NOTEBOOK) as f:
        notebook = json.load(f)
    assert notebook["nbformat"] == 4 and notebook["metadata"]["accelerator"] == "TPU"
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def _requirements():
    """setup.cfg's install_requires as bare names."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    lines = [line.split("#")[0].strip() for line in config["options"]["install_requires"].splitlines()]
    return [re.split(r"[<>=!~; \[]", line)[0] for line in lines if line]


def test_notebook_cells_are_python_and_the_install_cell_installs_the_tpu_build():
    cells = _code_cells()
    install = [cell for cell in cells if cell.startswith(INSTALL_MARKER)]
    assert len(install) == 1
    install = install[0]
    for cell in cells:  # plain Python (no shell or magic lines), so that every cell runs under the test below
        ast.parse(cell)
        assert not any(line.lstrip().startswith(("!", "%")) for line in cell.splitlines())
    settings = cells[0]
    assert re.search(r'^TP_KERAS_SOURCE = "git\+https://github\.com/<owner>/tp_keras"$', settings, re.M)
    assert re.search(r'^TENSORFLOW_TPU = "tensorflow-tpu==[\d.]+"$', settings, re.M)
    assert re.search(r'^KERAS = "keras==[\d.]+"$', settings, re.M)
    # The TPU build with libtpu from Google's index; tp_keras not editable (no restart) and without `tensorflow`
    # (which would replace the TPU build); a local path works too.
    assert 'pip_install(TENSORFLOW_TPU, KERAS, "-f", "https://storage.googleapis.com/libtpu-tf-releases/index.html")' \
        in install
    assert 'pip_install("--no-deps", source)' in install and '"-e"' not in install
    assert "os.path.exists(TP_KERAS_SOURCE)" in install
    others = [name for name in _requirements() if name not in ("tensorflow", "keras", "numpy")]
    assert others and all(f'"{name}' in install for name in others), others


def test_notebook_names_real_entry_points():
    python = "\n".join(_code_cells())
    assert 'make_strategy("tpu")' in python and "DistributedTrainer.from_config(" in python
    assert 'Config.from_paper_cell("cifar10_DTPDRL"' in python and 'precision="float32"' in python
    for node in ast.walk(ast.parse(python)):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("tp_keras"):
            module = importlib.import_module(node.module)
            for alias in node.names:  # a function or class of the module, or a submodule of the package
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    node.module, alias.name)


def _tiny_dataset(name, data_dir=None, *, seed=42, validation_size=5000, no_val_set=False, flatten=True,
                  dtype="float32"):
    """Stands in for tensorflow-datasets: a few samples of the real shapes."""
    from tp_keras.run.data import Dataset, Split
    image_shape = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}[name]
    rng = np.random.default_rng(seed)

    def split(n):
        return Split(rng.normal(size=(n, int(np.prod(image_shape)))).astype(dtype), (np.arange(n) % 10).astype("int32"))
    return Dataset(name, split(24), None if no_val_set else split(8), split(8), 10, "classification", image_shape)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    import tensorflow as tf
    from tp_keras.run import data, distribute
    from tp_keras.run.config import Config
    requested = []

    def default_strategy(name, **kwargs):
        requested.append(name)
        return tf.distribute.get_strategy()

    monkeypatch.setattr(distribute, "make_strategy", default_strategy)
    monkeypatch.setattr(data, "load_dataset", _tiny_dataset)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for index, cell in enumerate(_code_cells()):
        if not cell.startswith(INSTALL_MARKER):
            exec(compile(cell, f"colab_tpu.ipynb cell {index}", "exec"), namespace)

    assert requested == ["tpu"]
    epochs = namespace["EPOCHS"]
    for run in ("tpu_mnist_ddtp_linear", "tpu_cifar10_dtpdrl"):
        with open(tmp_path / "runs" / run / "summary.json") as f:
            summary = json.load(f)
        assert summary["status"] == "finished" and summary["epochs_run"] == epochs, summary
    assert namespace["config"] == Config.from_paper_cell("cifar10_DTPDRL", epochs=epochs, precision="float32")
    assert namespace["trainer"].model.hidden_sizes == [1024] * 3
