"""launch/<name>.flags, one per table config of the reference (tp_keras/reference/configs.py): every file parses with
the launcher's flags, validates, holds exactly the reference's values, carries its header (the paper's number, the
cost, the command), and every file builds its model and takes one training step on mock data of its shape."""
import functools
import importlib.util
import json
import os

import numpy as np
import pytest

from tp_keras.reference import configs as P
from tp_keras.reference import facts as F
from tp_keras.run.config import Config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
LAUNCH_DIR = os.path.join(ROOT, "launch")
# Optional: the reference's resolved configs (a JSON file with "final_configs"), named by this variable where a
# developer has it; the comparison is skipped without it.
CONFIGS_JSON = os.environ.get("TP_KERAS_REFERENCE_CONFIGS", "")
ALL_NAMES = sorted(f[:-len(".flags")] for f in os.listdir(LAUNCH_DIR) if f.endswith(".flags"))
# The reference's cells; the other flagfiles (the conv chains: cifar10_LDRL_vgg, fashion_mnist_conv_*) are not
# reference configs and are checked by tests/test_conv_launch.py.
CONV_NAMES = ("cifar10_LDRL_vgg",) + tuple(n for n in ALL_NAMES if n.startswith("fashion_mnist_conv_"))
# FW-DTP's authors' configurations (launch/*_FWDTPBN.flags, *_DTPBN.flags), checked by tests/test_fwdtp_bn.py.
FWDTP_NAMES = tuple(n for n in ALL_NAMES if n.endswith(("_FWDTPBN", "_DTPBN")))
NAMES = [n for n in ALL_NAMES if n not in CONV_NAMES + FWDTP_NAMES]
# The values a flagfile must reproduce exactly: every hyper-parameter (for the CNN: no MLP architecture keys).
HYPER_KEYS = ("lr", "target_stepsize", "beta1", "beta2", "epsilon", "forward_wd", "lr_fb", "beta1_fb", "beta2_fb",
              "epsilon_fb", "feedback_wd", "sigma", "batch_size", "epochs", "epochs_fb", "extra_fb_epochs",
              "num_hidden", "size_hidden", "size_hidden_fb", "recurrent_input", "no_val_set",
              "only_train_first_layer")


def _parse(name):
    """The Config the launcher makes from launch/<name>.flags (and the --cell label)."""
    from tp_keras.run import launch
    launch.FLAGS(["launch", f"--flagfile={os.path.join(LAUNCH_DIR, name + '.flags')}"])
    try:
        return launch.config_from_flags(), launch.FLAGS.cell
    finally:
        launch.FLAGS.unparse_flags()


def test_one_flagfile_per_table_config_and_one_config_per_paper_cell():
    assert set(NAMES) == set(P.FINAL_CONFIGS) and len(NAMES) == 79  # the 81 final configs less the 2 toy figures
    assert set(CONV_NAMES) <= set(ALL_NAMES) and len(CONV_NAMES) == 6  # the VGG and the five conv comparison runs
    cells = [cell for cell in F.PAPER_CELLS.values() if cell is not None]
    assert len(cells) == len(set(cells)), "two configs claim the same paper cell"
    assert set(cells) == set(F.PAPER_RESULTS)  # 31 + 31 + 4 cells of Tables 1-3 (DFA on Frozen-MNIST is "/")
    assert len(cells) == 66
    # Config.paper(method) is still the MNIST Table 1 cell of the method.
    for method, name in P.MNIST_TABLE1.items():
        assert F.PAPER_CELLS[name] == (1, "mnist", method)
        assert Config.paper(method) == Config.from_paper_cell(name, precision="float32")


def test_paper_facts_agree_with_the_configs_and_the_registry():
    """paper_facts is the one source: every config's method is a registry method with the paper's label, the CNN
    methods are exactly those of the CNN configs, the table rows are the paper's eight methods, and a method the
    paper does not have is shown by its name."""
    from tp_keras.core.rules import RULES
    methods = {c["method"] for c in P.FINAL_CONFIGS.values()}
    assert methods == set(F.TABLE_METHODS) and methods <= set(RULES) and set(F.METHOD_LABELS) <= set(RULES)
    assert set(F.CNN_METHODS) == {c["method"] for c in P.FINAL_CONFIGS.values() if c["architecture"] == "cnn"}
    assert F.method_label("ddtp_linear") == "DDTP-linear" and F.method_label("a_new_rule") == "a_new_rule"
    assert F.CELLS["mnist_DDTPRHL_rec_extrafb"] == (1, "mnist", "ddtp_rhl", "rec_extrafb")
    assert F.CELLS["cifar10_DFAConv_train"] == (3, "cifar10_train", "dfa", None)
    assert F.CELLS["frozen_mnist_DTP_improved_train"] == (2, "frozen_mnist", "dtp_pretrained", None)
    assert F.REFERENCE_EPOCHS["cifar10_BP"] == 150 and F.REFERENCE_EPOCHS["mnist_BP"] == 100


@functools.lru_cache(maxsize=None)
def _generator():
    """launch/make_flagfiles.py as a module (the script imports no TensorFlow)."""
    spec = importlib.util.spec_from_file_location("make_flagfiles", os.path.join(LAUNCH_DIR, "make_flagfiles.py"))
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    return generator


def test_flagfiles_are_what_the_generator_writes(capsys):
    """launch/make_flagfiles.py --check, in this process."""
    generator = _generator()
    assert generator.main(["make_flagfiles.py", "--check"]) == 0, capsys.readouterr().err


@pytest.mark.skipif(not os.path.isfile(CONFIGS_JSON), reason="TP_KERAS_REFERENCE_CONFIGS does not name the "
                    "reference's configs file")
def test_paper_configs_equal_the_reference_configs_exactly():
    with open(CONFIGS_JSON) as f:
        reference = json.load(f)["final_configs"]
    assert set(P.FINAL_CONFIGS) == {n for n in reference if not n.startswith("toy_figure")}
    for name, config in P.FINAL_CONFIGS.items():
        resolved = reference[name]["resolved"]
        assert config["precision"] == ("float64" if resolved["double_precision"] else "float32"), name
        for key, value in config.items():
            if key in ("architecture", "method", "precision"):
                continue
            expected = resolved[key]
            expected = tuple(expected) if isinstance(expected, list) else expected
            assert value == expected and type(value) is type(expected), (name, key, value, expected)


def test_method_mapping_and_the_deliberate_departures():
    expected = {"BP": "bp", "DTPDR": "dtpdrl", "DMLPDTP2": "ddtp_linear", "DKDTP2": "ddtp_rhl",
                "DDTPControl": "ddtp_control", "DFA": "dfa", "BPConvCIFAR": "bp", "DDTPConvCIFAR": "ddtp_linear",
                "DDTPConvControlCIFAR": "ddtp_control", "DFAConvCIFAR": "dfa"}
    for name, config in P.FINAL_CONFIGS.items():
        if name == "cifar10_DDTPControl":  # docs/semantics.md §15.4: network_type DMLPDTP2, run as DDTP-control
            assert config["network_type"] == "DMLPDTP2" and config["method"] == "ddtp_control"
        elif config["network_type"] == "DTP":
            pretrained = "DTP_pretrained" in name or "DTP_improved" in name
            assert config["method"] == ("dtp_pretrained" if pretrained else "dtp"), name
        else:
            assert config["method"] == expected[config["network_type"]], name
        assert config["architecture"] == ("cnn" if "Conv" in config["network_type"] else "mlp"), name
    assert P.FINAL_CONFIGS["cifar10_BP"]["epochs"] == 150  # docs/semantics.md §15.11, kept as shipped


@pytest.mark.parametrize("name", NAMES)
def test_flagfile_header(name):
    with open(os.path.join(LAUNCH_DIR, name + ".flags"), encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines()
    header = [line for line in lines if line.startswith("#")]
    flag_lines = [line for line in lines if line and not line.startswith("#")]
    assert lines[0].startswith(f"# {name}: the reference's final_configs/{name}.py"), lines[0]
    assert lines[:len(header)] == header, "the header comes first"
    assert all(line.startswith("--") for line in flag_lines)
    comment = " ".join(line[2:].strip() for line in header)
    assert "Paper: " in comment
    cell = F.PAPER_CELLS[name]
    if cell is None:
        assert "Paper: not in the paper" in comment
    else:
        assert F.PAPER_RESULTS[cell]["text"] in comment and f"Table {cell[0]}" in comment
    assert "Cost: an estimate" in comment and "s/epoch" in comment
    run = [line for line in header if line.startswith("# Run: ")]
    data_dir = _generator().DATA_DIR[P.FINAL_CONFIGS[name]["dataset"]]  # the datasets' folder beside a checkout
    assert run == [f"# Run: python -m tp_keras.launch --flagfile=launch/{name}.flags --data_dir={data_dir}"]
    for marker, names in (("docs/semantics.md §15.4", ["cifar10_DDTPControl"]),
                          ("docs/semantics.md §15.5", ["mnist_DTPDRL", "mnist_DTP_pretrained"]),
                          ("docs/semantics.md §15.11", ["cifar10_BP", "cifar10_BPConv_train", "cifar10_DDTPConv_train",
                                               "cifar10_DFAConv_train"])):
        assert (marker in comment) == (name in names), (name, marker)
    config = P.FINAL_CONFIGS[name]
    assert f"--precision={config['precision']}" in flag_lines
    assert ("--no_val_set" in flag_lines) == config["no_val_set"]
    assert ("--only_train_first_layer" in flag_lines) == config["only_train_first_layer"]
    assert f"--cell={name}" in flag_lines
    if config["architecture"] == "cnn":
        assert "--architecture=cnn" in flag_lines
        for key in ("lr", "epsilon"):
            assert f"--{key}={','.join(repr(v) for v in config[key])}" in flag_lines


@pytest.mark.parametrize("name", NAMES)
def test_flagfile_parses_to_the_reference_values_exactly(name):
    expected = P.FINAL_CONFIGS[name]
    config, cell = _parse(name)
    config.validate()
    assert cell == name
    assert (config.method, config.dataset, config.precision) == (expected["method"], expected["dataset"],
                                                                 expected["precision"])
    assert getattr(config, "architecture", "mlp") == expected["architecture"]
    for key in HYPER_KEYS:
        if key in expected:
            assert getattr(config, key) == expected[key], (name, key)
    assert config == Config.from_paper_cell(name)


def _shape_only_dataset(config):
    from tp_keras.run.data import Dataset, Split
    image_shape = (32, 32, 3) if config.dataset == "cifar10" else (28, 28, 1)
    inputs = int(np.prod(image_shape))
    split = Split(np.zeros((1, inputs), config.precision), np.zeros((1,), "int32"))
    return Dataset(name=config.dataset, train=split, val=None, test=split, num_outputs=10, task="classification",
                   image_shape=image_shape)


# The fast tier steps one flagfile per method (its MNIST Table 1 cell), Frozen-MNIST and the CNN; the slow tier
# steps every flagfile.
FAST_STEP_NAMES = set(P.MNIST_TABLE1.values()) | {"mnist_frozen_DDTPlinear", "cifar10_DDTPConv"}


@pytest.mark.parametrize("name", [name if name in FAST_STEP_NAMES else pytest.param(name, marks=pytest.mark.slow)
                                  for name in NAMES])
def test_flagfile_builds_its_model_and_takes_one_training_step(name):
    """The file's model (its method, architecture, precision, Frozen-MNIST switch and optimizers)
    takes one training step, eagerly, on 4 random samples of the dataset's input size (784 or 3072; the CNN reads
    them as flattened 32x32x3 images); the loss and every updated weight stay finite, the first layer's forward
    weights move, the output layer's move unless Frozen-MNIST, and trained feedback weights move."""
    from tp_keras.core import step
    from tp_keras.run.factories import build_model, build_trainer
    config, _ = _parse(name)
    config.validate()
    dataset = _shape_only_dataset(config)
    assert dataset.train.x.shape[1] == P.FINAL_CONFIGS[name].get("size_input", 3072)
    model = build_model(config, dataset)
    trainer = build_trainer(config, model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, dataset.train.x.shape[1])).astype(config.precision)
    y = np.array([0, 3, 7, 9], "int32")
    first, last = model.tp_layers[0].forward_variables, model.tp_layers[-1].forward_variables
    first_before, last_before = [v.numpy().copy() for v in first], [v.numpy().copy() for v in last]
    feedback_before = [v.numpy().copy() for v in model.feedback_variables]
    out = step.train_step(model, trainer.forward_optimizer, trainer.feedback_optimizer, x, y)
    assert np.isfinite(float(out["loss"])), name
    for key in ("finite_loss", "finite_layers", "finite_feedback"):
        if key in out:
            assert np.all(np.asarray(out[key]) == 1.0), (name, key)
    for v in model.forward_variables + model.feedback_variables:
        assert np.all(np.isfinite(v.numpy())), (name, v.name)
    assert all(v.numpy().dtype == np.dtype(config.precision) for v in first + last)
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(first_before, first)), name
    # Frozen-MNIST: the output layer keeps its initial weights; otherwise it trains too.
    last_moved = any(not np.array_equal(a, v.numpy()) for a, v in zip(last_before, last))
    assert last_moved != config.only_train_first_layer, name
    if trainer.trains_feedback:
        assert any(not np.array_equal(a, v.numpy()) for a, v in zip(feedback_before, model.feedback_variables))


def test_cell_flag_names_the_default_workdir(monkeypatch):
    """--cell (set by every flagfile) makes the default workdir runs/<cell>_seed<seed>, so that two cells of one
    method and dataset (e.g. mnist_DDTPRHL and mnist_DDTPRHL_rec, or a Frozen-MNIST cell) never share one."""
    from tp_keras.run import experiment, launch
    seen = []
    monkeypatch.setattr(experiment, "train_and_evaluate",
                        lambda config, workdir, *args, **kwargs: seen.append((config, workdir)) or {"status": "ok"})
    for argv, expected in ((["--flagfile=" + os.path.join(LAUNCH_DIR, "mnist_frozen_DDTPRHL.flags"), "--seed=7"],
                            os.path.join("runs", "mnist_frozen_DDTPRHL_seed7")),
                           (["--method=ddtp_rhl"], os.path.join("runs", "mnist_ddtp_rhl_seed42"))):
        launch.FLAGS(["launch"] + argv)
        try:
            launch.main(["launch"])
        finally:
            launch.FLAGS.unparse_flags()
        assert seen[-1][1] == expected
    assert seen[0][0] == Config.from_paper_cell("mnist_frozen_DDTPRHL", seed=7)
