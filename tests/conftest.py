"""Shared fixtures and NumPy reference helpers for the tp_keras tests.

Everything here is tiny (a 7-6-5-4-3 network, batches of 6) so the suite runs in seconds on 2 CPU cores.
Reference computations are written in plain NumPy from the variables' values, independently of the library's
own code paths (no stacking, no tapes), using the row-vector convention h = s(x W + b).
"""
from __future__ import annotations

import dataclasses
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from tp_keras.core.model import TPModel
from tp_keras.core.rules import RULES
import tp_keras.core.step as tp_step

# Test files in the order `pytest -n 2 --dist loadfile` hands them to its workers: the longest first, so that the
# two workers finish together (a long file handed out last leaves one worker idle while it runs). A file's length
# is read from its markers, not measured: the files with the most `slow` tests (subprocesses, end-to-end runs,
# seconds of tracing each) first, then by their number of tests (xdist's own order), so the many short in-process
# files come last and fill in whichever worker is free. The `slow` tests are counted before `-m` deselects them:
# in the fast tier a file with many keeps the fast representatives of its expensive contracts (a fit, a save and
# load, seconds of tracing each), so it goes first there too.
class _SlowTestsPerFile:
    def __init__(self):
        self.counts = {}

    @pytest.hookimpl(tryfirst=True)  # before `-m` deselects
    def pytest_collection_modifyitems(self, items):
        for item in items:
            self.counts[item.path] = self.counts.get(item.path, 0) + (item.get_closest_marker("slow") is not None)


_slow_tests_per_file = _SlowTestsPerFile()


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # xdist: keep the collection order below
        config.option.loadscopereorder = False
    config.pluginmanager.register(_slow_tests_per_file, "slow_tests_per_file")


@pytest.hookimpl(trylast=True)  # after `-m` has deselected: order the tests that will run
def pytest_collection_modifyitems(config, items):
    slow, count = _slow_tests_per_file.counts, {}
    for item in items:
        count[item.path] = count.get(item.path, 0) + 1
    items.sort(key=lambda item: (-slow.get(item.path, 0), -count[item.path], str(item.path)))  # stable within a file


# The fast tier's budget per test (setup, call and teardown together), on the 2-core CPU of docs/performance.md: an
# unmarked test over it belongs in the slow tier or needs a cheaper case. The terminal summary lists every unmarked
# test over it, so the fast tier cannot grow unnoticed as features land; a shared machine's timings vary, so it is
# reported, not failed.
FAST_TEST_BUDGET_S = 3.0
_fast_test_seconds = {}


def pytest_runtest_logreport(report):
    if "slow" not in report.keywords:
        _fast_test_seconds[report.nodeid] = _fast_test_seconds.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    over = sorted(((seconds, name) for name, seconds in _fast_test_seconds.items() if seconds > FAST_TEST_BUDGET_S),
                  reverse=True)
    if over:
        terminalreporter.section(f"{len(over)} fast-tier test(s) over the {FAST_TEST_BUDGET_S:g} s budget: mark them "
                                 "slow or give them a cheaper case")
        for seconds, name in over:
            terminalreporter.write_line(f"{seconds:6.2f}s {name}")


# The default small architecture n_0, n_1..n_{L-1}, n_L (L = 4 layers: 3 hidden + output).
INPUT, HIDDEN, OUTPUT = 7, (6, 5, 4), 3
BATCH = 6


def wait_for(condition, what, timeout=120.0, poll=0.1):
    """Polls `condition()` until it returns a true value, which it returns; fails naming `what` after `timeout` s
    (the tests that watch another process's files: a worker's first trial, its checkpoint)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def assert_no_tensorflow_startup_noise(stderr: str) -> None:
    """A command's stderr carries none of TensorFlow's CUDA-probe lines on a machine without a GPU, unless
    TF_CPP_MIN_LOG_LEVEL asks for TensorFlow's logs (cli.quiet_tensorflow_without_gpu)."""
    import glob
    if glob.glob("/dev/nvidia[0-9]*") or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1"):
        return
    assert "cuda" not in stderr.lower(), stderr[-2000:]


# The one list of every learning rule, from the registry (tp_keras.core.rules.RULES). A contract that every rule must
# meet is parametrised over it, so a rule added to the registry is checked by every such contract. A test that runs
# fewer rules takes a subset derived below from this list, named after the property that selects it, with the
# reason; no test types its own list of every method.
ALL_METHODS = sorted(RULES)


def methods_where(predicate, names=ALL_METHODS):
    """The rules of `names` (in its order) whose rule value satisfies `predicate`."""
    return [name for name in names if predicate(RULES[name])]


def _one_per_step(names):
    """`names` less those whose rule equals an earlier one's in every field but its name and summary: such methods
    differ only in the paper's schedule (dtp_pretrained is dtp with feedback pre-training), so their compiled steps
    are the same graph and a step-level check of one covers both."""
    seen, kept = set(), []
    for name in names:
        rule = RULES[name]
        key = tuple(repr(getattr(rule, f.name)) for f in dataclasses.fields(rule) if f.name not in ("name", "summary"))
        if key not in seen:
            seen.add(key)
            kept.append(name)
    return kept


# The slow step-level checks (bit-identity of loops, autograph's graphs, two replicas) run these, to keep the suite
# fast: a check of one compiled step covers every method of the same step.
STEP_METHODS = _one_per_step(ALL_METHODS)
# The rules that propagate targets (every rule but bp): the checks of targets and local losses.
TP_METHODS = methods_where(lambda rule: rule.uses_targets)
# The rules that train no feedback weights (no feedback, or fixed feedback): what a feedback schedule must refuse.
UNTRAINED_FEEDBACK_METHODS = methods_where(lambda rule: not rule.trains_feedback)


def _one_per_feedback_path(names):
    """One rule of `names` for each feedback path (none, layer-wise, direct, direct through a random layer) trained
    or fixed: the one trained by the difference reconstruction loss (DRL) where a path has several, else the first."""
    chosen = {}
    for name in sorted(names, key=lambda n: RULES[n].feedback_loss != "drl"):  # stable: DRL first, then by name
        chosen.setdefault((RULES[name].feedback, RULES[name].trains_feedback), name)
    return [name for name in names if name in chosen.values()]


# A check that costs a fit or a process per rule runs one rule per feedback path, to keep the suite fast: the step
# differs between paths (which variables exist, which are trained, how a target reaches a layer), while rules of the
# same path differ only in a formula that the every-rule contracts and the closed-form tests check.
FEEDBACK_PATH_METHODS = _one_per_feedback_path(ALL_METHODS)


def fast_tier(methods, fast):
    """`methods` as parameters, each one not in `fast` marked `slow`: where a contract costs seconds of tracing per
    rule, the fast tier keeps its representative(s) and the slow tier runs the rest."""
    return [name if name in fast else pytest.param(name, marks=pytest.mark.slow) for name in methods]

NP_ACT = {"tanh": np.tanh, "linear": lambda a: a}
NP_ACT_DERIV_FROM_OUTPUT = {"tanh": lambda h: 1.0 - h ** 2, "linear": lambda h: np.ones_like(h)}


def to_np(value):
    """A Keras/TF variable or tensor as a float64 NumPy array (exact for float32 and float64 values)."""
    if value is None:
        return None
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(value)


def make_model(method, *, dtype="float64", input_size=INPUT, hidden=HIDDEN, output=OUTPUT, target_stepsize=0.1,
               sigma=0.05, seed=42, **kwargs):
    from tp_keras.core.rules import get_rule
    # The default hyper-parameters go to the methods that use them (TPModel refuses one the rule does not use).
    used = get_rule(method).used(target_stepsize=target_stepsize, sigma=sigma)
    return TPModel(method, input_size, list(hidden), output, seed=seed, dtype=dtype, **used, **kwargs)


def randomize_biases(model, seed=0, scale=0.3):
    """Gives every (forward and feedback) bias a random non-zero value.

    Biases start at 0, which would hide any mistake in how a bias enters a formula; the reference formulas must
    hold for any parameter values.
    """
    rng = np.random.default_rng(seed)
    biases = [layer.bias for layer in model.tp_layers if layer.bias is not None]
    biases += [layer.feedback_bias_var for layer in model.tp_layers if layer.feedback_bias_var is not None]
    if model.direct_feedback is not None:
        biases += [b for b in model.direct_feedback.biases if b is not None]
    for b in biases:
        b.assign(rng.normal(scale=scale, size=tuple(b.shape)).astype(b.dtype))
    return model


def make_batch(seed=0, batch=BATCH, input_size=INPUT, output=OUTPUT):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, input_size))
    y = rng.integers(0, output, size=batch).astype(np.int32)
    y[:output] = np.arange(output)  # every class present
    return x, y


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def onehot(y, n):
    return np.eye(n)[y]


def np_batch_norm(z):
    """FW-DTP's authors' utils.batch_normalization: (z − mean)/(torch.std + 1e-12) over the batch's rows."""
    return (z - z.mean(axis=0)) / (z.std(axis=0, ddof=1) + 1e-12)


def np_forward(model, x):
    """[h_0..h_L] recomputed in NumPy from the forward variables (batch-normalised where a layer is, FWDTP-BN)."""
    hs = [np.asarray(x, dtype=np.float64)]
    for layer in model.tp_layers:
        a = hs[-1] @ to_np(layer.kernel)
        if layer.bias is not None:
            a = a + to_np(layer.bias)
        h = NP_ACT[layer.activation](a)
        hs.append(np_batch_norm(h) if getattr(layer, "batch_norm", False) else h)
    return hs


def np_output_error(h_out, y):
    """e_L = (softmax(h_L) − onehot)/B (batch-mean cross-entropy gradient w.r.t. the logits)."""
    return (softmax(h_out) - onehot(y, h_out.shape[1])) / h_out.shape[0]


def grads_by_variable(variables, grads):
    """{id(variable): gradient as NumPy} for aligned lists."""
    assert grads is not None
    assert len(variables) == len(grads)
    return {id(v): to_np(g) for v, g in zip(variables, grads)}


class FixedNoise:
    """A rule's noise component that returns known ε: N(0, 1) values drawn by NumPy (rounded to float32, as the
    library's draw is), the same on every call. `calls` counts the draws."""

    def __init__(self, blocks):
        self.eps = np.concatenate(blocks, axis=1).astype(np.float32)
        self.calls = []

    def __call__(self, shape, seed):
        assert int(shape[1]) == self.eps.shape[1]
        self.calls.append(1)
        return tf.constant(self.eps)


def install_fixed_noise(model, batch, seed=123, sizes=None):
    """Gives the model's rule a noise component with known ε_ℓ (drawn by NumPy), so that the feedback losses see
    the corruptions h̃_ℓ = h_ℓ + σ·ε_ℓ (ℓ = 1..L−1, or one block per size in `sizes`).

    Returns the list of σ·ε_ℓ, so the reference computation uses exactly the same corruption, and the draw count.
    """
    import dataclasses
    rng = np.random.default_rng(seed)
    eps = [rng.normal(size=(batch, n)).astype(np.float32) for n in (sizes or model.hidden_sizes)]
    fixed = FixedNoise(eps)
    model.set_rule(dataclasses.replace(model.rule, noise=fixed))
    return [model.sigma * e.astype(np.float64) for e in eps], fixed.calls


# --------------------------------------------------------------------------------------------------------------
# Synthetic classification problem (3 overlapping Gaussian blobs in 10-D) shared by the learning tests.
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def blobs():
    rng = np.random.default_rng(2024)
    n, d, k = 200, 10, 3
    centers = rng.normal(size=(k, d))
    y = rng.permutation(np.arange(n) % k).astype(np.int32)
    x = (centers[y] + 0.8 * rng.normal(size=(n, d))).astype(np.float32)
    return x, y


@pytest.fixture
def batch():
    return make_batch()


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """A 100-train / 40-test MNIST look-alike as the four IDX files, whose label is readable from the image (so it
    is learnable); shared by the end-to-end tests (launcher, faults, sweeps)."""
    from fixture_data import write_idx_images, write_idx_labels
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 100), ("t10k", 40)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, label * 2:label * 2 + 3, :] = 255
        write_idx_images(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_labels(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return str(folder)
