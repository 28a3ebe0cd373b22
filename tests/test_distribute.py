"""tf.distribute: strategy selection (unit tests with fake devices and a fake TPU) and the 2-replica equivalence.

The equivalence runs in ONE subprocess (the CPU must be split into 2 logical devices before TensorFlow
initialises its devices, and one process pays TensorFlow's start-up once): for one rule per feedback path and
feedback loss, a few steps of `DistributedTrainer` under `MirroredStrategy` over the 2 logical CPUs and of the plain
`step.Trainer` on the same global batches, compared here.

Tolerance: |Δw| ≤ 1e-5 on weights of order 1 (3e-5 with XLA), metrics to 1e-5 relative. The two runs differ
only by float32 rounding: each replica sums its own rows and the all-reduce adds the two partial sums, where one
device sums all rows at once (and the kernels of a 4-row and an 8-row batch may block, vectorise and, under XLA,
fuse differently), i.e. a few ulp per gradient. Adam (ε = 1e-4 here) turns a gradient error δg into a step error
≤ lr·δg/ε, ~1e-7 per step; measured after 3–4 steps on this CPU: ≤ 1.8e-6 (GNT; 0 with OneDeviceStrategy), and
5.9e-6 with XLA. A semantic error is orders of magnitude larger: one Adam step is lr = 1e-2; losses scaled by
the shard's instead of the global batch size, or replicas drawing their noise from the wrong rows, were measured
at 1e-3–1e-1 while developing this test. ε = 1e-4 (the order of the paper's tuned feedback ε) rather than 1e-8
keeps Adam from amplifying rounding in near-zero gradients by lr/ε = 1e6, which would hide the property.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from conftest import STEP_METHODS
from tp_keras.core import step
from tp_keras.core.rules import RULES
from tp_keras.run import distribute as D


def _one_per_path_and_loss(names):
    """One rule of `names` for each feedback path and feedback loss (trained or not): what a replica's share of a
    step depends on, the batch means of the losses and the rows of the global batch's noise it keeps. The rules
    this leaves out differ from the one kept only in their target rule, which acts sample by sample (tp's plain
    targets against dtp's difference targets, gnt's Gauss-Newton targets against bp)."""
    chosen = {}
    for name in names:
        rule = RULES[name]
        chosen.setdefault((rule.feedback, rule.feedback_loss, rule.trains_feedback), name)
    return [name for name in names if name in chosen.values()]


# The distributed trainer runs every rule but those that train their feedback first (ldrl), which it refuses; one
# method per compiled step (conftest.STEP_METHODS), one per feedback path and loss.
DISTRIBUTED_METHODS = _one_per_path_and_loss([name for name in STEP_METHODS if not RULES[name].feedback_first])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "EQUIVALENCE_JSON "
WEIGHT_ATOL = 1e-5
XLA_WEIGHT_ATOL = 3e-5
METRIC_RTOL = 1e-5
UNEVEN = ("bp", "dtpdrl", "ddtp_linear")  # also a 7-row global batch (shards of 3 and 4 rows)
XLA = "ddtp_linear"  # one train step: XLA compiles each replica's gradient computation, whatever the step
# Keras `fit` under the strategy: fit's per-replica scaling is one code path for every rule, checked on a rule of
# trained feedback with noise (each case costs a fit on one device and one on two replicas).
FIT = ("dtpdrl",)

_SCRIPT = textwrap.dedent(r'''
    import contextlib, json, os, sys, time
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from tp_keras.core import step
    from tp_keras.core.rules import RULES
    from tp_keras.core.model import TPModel
    from tp_keras.core.optimizers import TorchAdam
    from tp_keras.run.distribute import DistributedTrainer, make_strategy

    UNEVEN, XLA, METHOD_NAMES, FIT = set(sys.argv[1].split(",")), sys.argv[2], sys.argv[3].split(","), sys.argv[4]
    t_start = time.perf_counter()

    mirrored = make_strategy("mirrored")  # no GPU here: both logical CPUs
    assert mirrored.num_replicas_in_sync == 2, mirrored.extended.worker_devices
    one_device = make_strategy("one_device")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 7)).astype("float32")
    Y = (np.arange(40) % 3).astype("int32")

    def components(variable):
        value = getattr(variable, "value", variable)
        return [v.numpy() for v in getattr(value, "values", (value,))]

    def run_case(method, strategy, schedule, jit, evaluate=False):
        t0 = time.perf_counter()
        def make_model():
            return TPModel(method, 7, [6, 5, 4], 3, seed=5,
                           **RULES[method].used(target_stepsize=0.1, sigma=0.1, size_hidden_fb=6))

        def optimizer():
            return TorchAdam(1e-2, epsilon=1e-4)

        dist = DistributedTrainer(make_model, optimizer, optimizer, strategy, jit_compile=jit)
        model = make_model()
        ref = step.Trainer(model, optimizer(), optimizer() if model.feedback_variables else None, jit_compile=jit)
        initial = [w.numpy() for w in model.weights]
        metric_err, keys, start = 0.0, [], 0
        for kind, rows in schedule:
            if kind == "feedback_step" and not ref.trains_feedback:
                kind = "train_step"
            x, y = X[start:start + rows], Y[start:start + rows]
            start += rows
            a, b = getattr(dist, kind)(x, y), getattr(ref, kind)(x, y)
            keys.append([sorted(a), sorted(b)])
            for k in b:
                va, vb = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
                metric_err = max(metric_err, float(np.max(np.abs(va - vb) / np.maximum(1.0, np.abs(vb)))))
        if evaluate:
            a, b = dist.eval_step(X[:9], Y[:9]), ref.eval_step(X[:9], Y[:9])
            keys.append([sorted(a), sorted(b)])
            metric_err = max(metric_err, max(abs(float(a[k]) - float(b[k])) / max(1.0, abs(float(b[k]))) for k in b))
        weight_err, replicas_equal = 0.0, True
        for v, w in zip(dist.model.weights, model.weights):
            copies = components(v)
            replicas_equal &= all(np.array_equal(copies[0], c) for c in copies[1:])
            weight_err = max(weight_err, float(np.max(np.abs(copies[0] - w.numpy()))))
        forward_changed = sum(not np.array_equal(w0, w.numpy()) for w0, w in zip(initial, model.weights)
                              if any(w is f for f in model.forward_variables))
        return {"weight_err": weight_err, "metric_err": metric_err, "replicas_equal": bool(replicas_equal),
                "keys": keys, "forward_changed": forward_changed, "forward": len(model.forward_variables),
                "replicas": strategy.num_replicas_in_sync, "seconds": time.perf_counter() - t0}

    even = [("train_step", 8), ("feedback_step", 8), ("train_step", 8)]
    cases = {}
    for method in METHOD_NAMES:
        schedule = even + [("train_step", 7)] if method in UNEVEN else even
        cases[method] = run_case(method, mirrored, schedule, False, evaluate=(method == "bp"))
    cases["xla:" + XLA] = run_case(XLA, mirrored, even[:1], True)
    cases["one_device:dtpdrl"] = run_case("dtpdrl", one_device, even[:2], False)

    def fit_case(method):
        """Keras fit under MirroredStrategy (its own batch sharding) vs fit on one device: 2 epochs, 30 samples,
        batch 8 (the last batch of 6 is split 3 + 3)."""
        def fitted(strategy):
            scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
            with scope:
                model = TPModel(method, 7, [6, 5, 4], 3, seed=5,
                                **RULES[method].used(target_stepsize=0.1, sigma=0.1))
                model.compile(forward_optimizer=TorchAdam(1e-2, epsilon=1e-4),
                              feedback_optimizer=TorchAdam(1e-2, epsilon=1e-4))
            history = model.fit(X[:30], Y[:30], batch_size=8, epochs=2, shuffle=False, verbose=0).history
            return model, history
        dist, dist_history = fitted(mirrored)
        ref, ref_history = fitted(None)
        weight_err = max(float(np.max(np.abs(components(v)[0] - w.numpy()))) for v, w in zip(dist.weights,
                                                                                               ref.weights))
        history_err = max(abs(a - b) / max(1.0, abs(b)) for k in ref_history
                          for a, b in zip(dist_history[k], ref_history[k]))
        return {"weight_err": weight_err, "history_err": history_err, "keys": [sorted(dist_history),
                                                                                 sorted(ref_history)]}

    fits = {method: fit_case(method) for method in FIT.split(",")}
    print("EQUIVALENCE_JSON " + json.dumps({"cases": cases, "fits": fits,
                                            "seconds": time.perf_counter() - t_start}), flush=True)
''')


@pytest.fixture(scope="module")
def equivalence():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, ",".join(UNEVEN), XLA, ",".join(DISTRIBUTED_METHODS),
                           ",".join(FIT)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert proc.returncode == 0 and lines, f"equivalence subprocess failed:\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len(MARKER):])


def _check(case, weight_atol=WEIGHT_ATOL):
    assert case["replicas_equal"], "the replicas' copies of a variable diverged"
    assert case["forward_changed"] == case["forward"], "a forward weight did not train: the check is vacuous"
    for dist_keys, ref_keys in case["keys"]:
        assert dist_keys == ref_keys
    assert case["weight_err"] <= weight_atol, case
    assert case["metric_err"] <= METRIC_RTOL, case


@pytest.mark.slow
@pytest.mark.parametrize("method", DISTRIBUTED_METHODS)
def test_two_replicas_match_one_device(equivalence, method):
    """MirroredStrategy over 2 logical CPUs == step.Trainer on the same global batches (train, feedback-only and
    train steps; 3 methods also a 7-row batch split 3 + 4; BP also the evaluation sums)."""
    case = equivalence["cases"][method]
    assert case["replicas"] == 2
    _check(case)


@pytest.mark.slow
def test_two_replicas_with_xla_match_one_device_with_xla(equivalence):
    """jit_compile=True: each replica's gradient computation compiled by XLA (XLA's Philox stream differs from
    TensorFlow's kernels, so the reference is step.Trainer with XLA too)."""
    _check(equivalence["cases"]["xla:" + XLA], XLA_WEIGHT_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("method", FIT)
def test_fit_under_two_replicas_matches_fit_on_one_device(equivalence, method):
    """Keras `fit` inside MirroredStrategy's scope: TPModel.train_step scales each replica's losses by the global
    batch and draws the global batch's noise, so weights and logged metrics equal one-device fit (measured
    7e-7 / 9.5e-7; scaling by each shard's own size instead would be 6e-3 off)."""
    fit = equivalence["fits"][method]
    assert fit["keys"][0] == fit["keys"][1]
    assert fit["weight_err"] <= WEIGHT_ATOL and fit["history_err"] <= METRIC_RTOL, fit


@pytest.mark.slow
def test_one_device_strategy_matches_trainer(equivalence):
    _check(equivalence["cases"]["one_device:dtpdrl"])
    assert equivalence["cases"]["one_device:dtpdrl"]["replicas"] == 1


# --------------------------------------------------------------------------------------------------------------
# Strategy selection, without a GPU or a TPU
# --------------------------------------------------------------------------------------------------------------

GPUS = ["/device:GPU:0", "/device:GPU:1"]
CPUS = ["/device:CPU:0"]


def _refuse(*_args, **_kwargs):
    raise AssertionError("must not be asked")


@pytest.mark.parametrize("name, gpus, cpus, tpu_found, kind, devices", [
    ("auto", GPUS, CPUS, True, "tpu", ()),
    ("auto", GPUS, CPUS, False, "mirrored", tuple(GPUS)),
    ("auto", GPUS[:1], CPUS, False, "one_device", tuple(GPUS[:1])),
    ("auto", [], CPUS, False, "one_device", tuple(CPUS)),
    ("one_device", GPUS, CPUS, False, "one_device", tuple(GPUS[:1])),
    ("one_device", [], CPUS, False, "one_device", tuple(CPUS)),
    ("mirrored", GPUS, CPUS, False, "mirrored", tuple(GPUS)),
    ("mirrored", [], ["/device:CPU:0", "/device:CPU:1"], False, "mirrored", ("/device:CPU:0", "/device:CPU:1")),
])
def test_plan_strategy(name, gpus, cpus, tpu_found, kind, devices):
    assert D.plan_strategy(name, gpus=gpus, cpus=cpus, tpu_found=tpu_found) == D.StrategyPlan(kind, devices)


def test_plan_asks_only_what_it_needs():
    """multi_worker and tpu never list devices (that would initialise TensorFlow before a multi-worker strategy
    can be created); only auto asks whether there is a TPU, and first."""
    assert D.plan_strategy("multi_worker", gpus=_refuse, cpus=_refuse, tpu_found=_refuse).kind == "multi_worker"
    assert D.plan_strategy("tpu", gpus=_refuse, cpus=_refuse, tpu_found=_refuse).kind == "tpu"
    assert D.plan_strategy("auto", gpus=_refuse, cpus=_refuse, tpu_found=lambda: True).kind == "tpu"
    assert D.plan_strategy("mirrored", gpus=lambda: GPUS, cpus=CPUS, tpu_found=_refuse).devices == tuple(GPUS)


@pytest.mark.parametrize("kwargs, flag, fix", [
    (dict(name="gpu"), "--strategy", "choose one of auto, one_device, mirrored, multi_worker, tpu"),
    (dict(name="mirrored", tpu="local"), "--tpu", "use --strategy=tpu"),
    (dict(name="one_device", gpus=[], cpus=[]), "--strategy", "TensorFlow install"),
])
def test_plan_refusals_name_the_flag(kwargs, flag, fix):
    kwargs = {"gpus": GPUS, "cpus": CPUS, **kwargs}
    name = kwargs.pop("name")
    with pytest.raises(D.DistributeError) as err:
        D.plan_strategy(name, **kwargs)
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert message.startswith(flag + ":") and fix in message


class TPUStrategy:  # stands in for tf.distribute.TPUStrategy (recognised by class name)
    num_replicas_in_sync = 8

    def __init__(self, resolver=None):
        self.resolver = resolver


def test_connect_tpu_recipe_with_a_fake_resolver():
    calls = []

    class Resolver:
        def __init__(self, tpu):
            calls.append(("resolver", tpu))

    strategy = D.connect_tpu(None, resolver_factory=Resolver, connect=lambda r: calls.append(("connect", r)),
                             initialize=lambda r: calls.append(("initialize", r)), strategy_cls=TPUStrategy)
    assert isinstance(strategy, TPUStrategy) and isinstance(strategy.resolver, Resolver)
    assert [c[0] for c in calls] == ["resolver", "connect", "initialize"] and calls[0][1] == "local"
    assert all(c[1] is strategy.resolver for c in calls[1:])
    D.connect_tpu("grpc://10.0.0.2:8470", resolver_factory=Resolver, connect=id, initialize=id,
                  strategy_cls=TPUStrategy)
    assert calls[-1] == ("resolver", "grpc://10.0.0.2:8470")


def test_make_strategy_tpu_and_auto_with_a_fake_tpu():
    seen = []

    def connect(tpu):
        seen.append(tpu)
        return TPUStrategy()

    assert isinstance(D.make_strategy("tpu", tpu="my-tpu", tpu_connect=connect, gpus=_refuse, cpus=_refuse),
                      TPUStrategy)
    assert isinstance(D.make_strategy("auto", tpu_connect=connect, tpu_probe=lambda: True, gpus=_refuse,
                                      cpus=_refuse), TPUStrategy)
    assert seen == ["my-tpu", None]


def test_auto_without_a_tpu_hint_never_probes_and_a_failing_tpu_falls_back():
    strategy = D.make_strategy("auto", tpu_connect=_refuse, tpu_probe=lambda: False, gpus=[], cpus=["/cpu:0"])
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)

    def broken(tpu):
        raise tf.errors.NotFoundError(None, None, "TPUs not found in the cluster")

    with pytest.warns(UserWarning, match="no usable TPU"):
        strategy = D.make_strategy("auto", tpu_connect=broken, tpu_probe=lambda: True, gpus=[], cpus=["/cpu:0"])
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    with pytest.raises(D.DistributeError, match=r"^--strategy: tpu: no TPU at 'local' .*--strategy=auto$"):
        D.make_strategy("tpu", tpu_connect=broken)


def test_tpu_hint():
    nothing = lambda pattern: False  # noqa: E731
    assert not D.tpu_hint({}, nothing)
    assert D.tpu_hint({"TPU_NAME": "v3-8"}, nothing)
    assert D.tpu_hint({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, nothing)
    assert D.tpu_hint({}, lambda pattern: pattern.startswith("/dev/accel"))
    assert D.tpu_hint({}, lambda pattern: pattern.startswith("/dev/vfio"))


def test_float64_is_refused_on_tpu_only():
    with pytest.raises(D.DistributeError) as err:
        D.check_precision(TPUStrategy(), "float64")
    assert str(err.value) == "--precision: float64 is not supported on TPU; use float32"
    D.check_precision(TPUStrategy(), "float32")
    D.check_precision(tf.distribute.OneDeviceStrategy("/cpu:0"), "float64")
    assert not D.is_tpu_strategy(tf.distribute.get_strategy())


@pytest.mark.parametrize("batch, replicas", [(8, 2), (7, 2), (128, 3), (1, 2), (88, 8)])
def test_shard_bounds(batch, replicas):
    bounds = D.shard_bounds(batch, replicas)
    assert len(bounds) == replicas and bounds[0][0] == 0 and bounds[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, in replica order
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_optimizer_made_outside_the_scope_is_refused():
    from tp_keras.core.model import TPModel
    from tp_keras.core.optimizers import TorchAdam
    outside = TorchAdam(1e-3)
    with pytest.raises(D.DistributeError, match="^--strategy: optimizer .* outside the strategy's scope"):
        D.DistributedTrainer(lambda: TPModel("bp", 4, [3], 2), lambda: outside, None,
                             tf.distribute.OneDeviceStrategy("/cpu:0"))


def test_angle_logging_is_refused():
    from tp_keras.run.config import Config
    with pytest.raises(D.DistributeError, match="^--log_angles: "):
        D.DistributedTrainer.from_config(Config.paper("ddtp_linear", log_angles=True), None,
                                         tf.distribute.get_strategy())


@pytest.mark.slow
def test_from_config_builds_the_launchers_model_and_optimizers():
    """`from_config` = factories.build_model/build_trainer inside the scope: one step equals the launcher's."""
    from tp_keras.run import factories
    from tp_keras.run.config import Config
    from tp_keras.run.data import Dataset, Split
    rng = np.random.default_rng(1)
    split = Split(rng.normal(size=(8, 5)).astype("float32"), (np.arange(8) % 3).astype("int32"))
    dataset = Dataset("tiny", split, None, split, 3, "classification", (5,))
    config = Config.paper("dtpdrl", num_hidden=2, size_hidden=4, seed=3)
    dist = D.DistributedTrainer.from_config(config, dataset, tf.distribute.OneDeviceStrategy("/cpu:0"))
    ref = factories.build_trainer(config, factories.build_model(config, dataset))
    assert dist.forward_optimizer.get_config() == ref.forward_optimizer.get_config()
    assert dist.feedback_optimizer.get_config() == ref.feedback_optimizer.get_config()
    a, b = dist.train_step(split.x, split.y), ref.train_step(split.x, split.y)
    assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-6)
    for v, w in zip(dist.model.weights, ref.model.weights):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=0, atol=1e-6)
    with pytest.raises(D.DistributeError, match="^--precision: float64 is not supported on TPU"):
        D.DistributedTrainer.from_config(Config.paper("dtpdrl", precision="float64"), dataset, TPUStrategy())


def test_feedback_first_rules_are_refused_in_one_line():
    from tp_keras.core.model import TPModel
    from tp_keras.core.optimizers import TorchAdam
    with pytest.raises(ValueError, match="trains its feedback before the targets") as err:
        D.DistributedTrainer(lambda: TPModel("ldrl", 7, [6, 5], 3), TorchAdam, TorchAdam)
    assert "\n" not in str(err.value)
