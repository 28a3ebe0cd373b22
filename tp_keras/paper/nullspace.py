"""The nullspace experiment (paper Fig. 2, docs/semantics.md §13.6): how much of a layer's update is wasted in
directions that cannot change the output.

    python -m tp_keras.nullspace --workdir=runs/nullspace [--seed=42] [--precision=float64]

Student–teacher regression (6-dim input, 400 train samples; teacher 6-1000×4-2 ReLU, gain 3), a 6-6-6-2 tanh
student whose forward weights stay frozen at their initial values, and two methods with the figure script's
hyper-parameters (its `figure_toy_nullspace` config): DTP with layer-wise feedback pre-training and
DDTP-linear. Batch size 1 and plain SGD for the feedback weights: 30 feedback pre-training epochs, then 5 epochs in
which every sample computes its targets and forward update (not applied) and takes one feedback step, each
followed by one extra feedback-only epoch. Every 10th sample of those 5 epochs, for each layer ℓ, the ratio
‖P_null ΔW_ℓ‖/‖ΔW_ℓ‖ with the nullspace of ∂h_L/∂vec(W_ℓ) for that sample (diagnostics.nullspace_ratios).

Writes `nullspace.json` (per method and layer: mean, SD and every logged ratio) and `nullspace.png` (the bar
chart of W_2, as in the paper; needs the `plots` extra). Expected: DDTP-linear's ratio far below DTP's.
Both methods share the student's initial forward weights (the reference's differ between methods because its
networks draw their feedback weights from the same random stream).
"""
from __future__ import annotations

import os
import time

import numpy as np
from absl import app, flags

from tp_keras.paper import figures
from tp_keras.paper.figures import MissingPlotsError
from tp_keras.reference.facts import method_label
from tp_keras.run import cli, rundir
from tp_keras.run.config import MAX_SEED, check_integer
from tp_keras.run.data import make_student_teacher

# The values of the reference's `figure_toy_nullspace` config (docs/semantics.md §13.6), at full precision.
METHOD_CONFIGS = {
    "dtp_pretrained": {"target_stepsize": 0.01186235243557516, "lr_fb": 0.003289433723080337,
                       "feedback_wd": 1.084514667138376e-05, "sigma": 0.09999731226483778},
    "ddtp_linear": {"target_stepsize": 0.0403226567555006, "lr_fb": 0.0022485520139920064,
                    "feedback_wd": 9.821494271391093e-05, "sigma": 0.06086642605203958},
}
# Fig. 2 names the pre-trained DTP just "DTP"; other methods keep their paper label (paper_facts).
FIGURE_LABELS = {"dtp_pretrained": "DTP"}
SCHEDULE = {"epochs_fb": 30, "epochs": 5, "extra_fb_epochs": 1, "log_interval": 10}
FIGURE_LAYER = 2  # the paper's bars show W_2, the second hidden layer's weights


def _dataset(seed: int, dtype: str):
    return make_student_teacher(seed, num_train=400, num_test=200, size_input=6, size_output=2, dtype=dtype)


def run_method(method: str, *, seed: int = 42, precision: str = "float64", dataset=None, schedule=None,
               hidden_sizes=(6, 6)) -> dict:
    """Runs one method of the experiment; returns {'ratios': (n_logged, L) array, 'rec_loss': last epoch mean}."""
    import tensorflow as tf
    from tp_keras.core import diagnostics as D
    from tp_keras.core import step as S
    from tp_keras.core.model import TPModel
    from tp_keras.core.optimizers import TorchSGD

    schedule = {**SCHEDULE, **(schedule or {})}
    dataset = dataset if dataset is not None else _dataset(seed, precision)
    hp = METHOD_CONFIGS[method]
    x_all = tf.constant(dataset.train.x, precision)
    y_all = tf.constant(dataset.train.y, precision)
    model = TPModel(method, x_all.shape[1], list(hidden_sizes), y_all.shape[1], task="regression",
                    target_stepsize=hp["target_stepsize"], sigma=hp["sigma"], seed=seed, dtype=precision)
    optimizer = TorchSGD(hp["lr_fb"], l2_decay=hp["feedback_wd"], precision=precision)
    optimizer.build(model.feedback_variables)
    kernels = D.kernel_indices(model.tp_layers)

    @tf.function
    def feedback_step(x, y):
        return S.train_step(model, None, optimizer, x, y, forward=False)["rec_loss"]

    @tf.function
    def frozen_step(x, y):
        """Targets and forward update (measured, not applied), then the feedback step: the forward weights stay
        frozen (docs/semantics.md §13.6 `freeze_forward_weights`)."""
        updates = S.compute_updates(model, x, y, forward=True, feedback=True)
        ratios = D.nullspace_ratios(model.tp_layers, updates.activations,
                                    [updates.forward_grads[i] for i in kernels])
        with tf.control_dependencies([ratios]):
            S.apply_updates(model, S.Updates(None, updates.feedback_grads, [], None, updates.loss, None, []),
                            None, optimizer)
        return ratios[0]

    rng = np.random.default_rng([seed, 1])
    n = int(x_all.shape[0])

    def one_pass(step, every=0):
        logged, losses = [], []
        for i, j in enumerate(rng.permutation(n)):
            out = step(x_all[j:j + 1], y_all[j:j + 1])
            if every and i % every == 0:
                logged.append(out)
            elif not every:
                losses.append(out)
        return logged, losses

    for _ in range(schedule["epochs_fb"]):
        one_pass(feedback_step)
    ratios = []
    rec = []
    for _ in range(schedule["epochs"]):
        logged, _ = one_pass(frozen_step, every=schedule["log_interval"])
        ratios.extend(r.numpy() for r in logged)
        for _ in range(schedule["extra_fb_epochs"]):
            _, losses = one_pass(feedback_step)
            rec.append(float(np.mean([float(v) for v in losses])))
    return {"ratios": np.array(ratios), "rec_loss": rec[-1] if rec else None}


def summarize(method: str, ratios: np.ndarray) -> dict:
    return {"label": FIGURE_LABELS.get(method) or method_label(method),
            "mean": float(ratios[:, FIGURE_LAYER - 1].mean()), "std": float(ratios[:, FIGURE_LAYER - 1].std()),
            "n": int(len(ratios)),
            "per_layer_mean": ratios.mean(axis=0).tolist(), "per_layer_std": ratios.std(axis=0).tolist()}


def run_experiment(workdir: str, *, seed: int = 42, precision: str = "float64", plot: bool = True,
                   log=print) -> dict:
    """Runs both methods, writes workdir/nullspace.json (and nullspace.png when `plot`); returns the results.
    Holds the workdir's lock meanwhile (a second run on it refuses in one line)."""
    check_integer("seed", seed, 0, MAX_SEED, example=42)
    rundir.make_folder(workdir)
    with rundir.WorkdirLock(workdir):
        rundir.remove_stale_temporaries(workdir)
        return _run_experiment(workdir, seed, precision, plot, log)


def _run_experiment(workdir, seed, precision, plot, log) -> dict:
    dataset = _dataset(seed, precision)
    results = {"layer": FIGURE_LAYER, "seed": seed, "precision": precision, "schedule": SCHEDULE,
               "hyper_parameters": METHOD_CONFIGS, "methods": {}}
    for method in METHOD_CONFIGS:
        t0 = time.perf_counter()
        out = run_method(method, seed=seed, precision=precision, dataset=dataset)
        summary = summarize(method, out["ratios"])
        summary.update(seconds=time.perf_counter() - t0, rec_loss=out["rec_loss"],
                       ratios=out["ratios"][:, FIGURE_LAYER - 1].tolist())
        results["methods"][method] = summary
        log(f"[tp_keras.nullspace] {method}: ‖P_null ΔW_{FIGURE_LAYER}‖/‖ΔW_{FIGURE_LAYER}‖ = "
            f"{summary['mean']:.3f} ± {summary['std']:.3f} over {summary['n']} samples "
            f"(all layers: {', '.join(f'{v:.3f}' for v in summary['per_layer_mean'])}) in {summary['seconds']:.0f}s")
    rundir.write_json(os.path.join(workdir, "nullspace.json"), results)
    if plot:
        # Its file name only: the figure sits beside nullspace.json, wherever the folder is moved.
        results["figure"] = os.path.basename(figures.nullspace_figure(results, os.path.join(workdir, "nullspace.png")))
        rundir.write_json(os.path.join(workdir, "nullspace.json"), results)
    return results


FLAGS = flags.FLAGS


def _define_flags():
    """Defined only when run as a command: importing this module (tests, notebooks) must not claim flag names
    such as --workdir that the launcher defines too."""
    flags.DEFINE_string("workdir", "runs/nullspace", "Output folder for nullspace.json and nullspace.png.")
    flags.DEFINE_integer("seed", 42, "Seed of the data, the student's initialisation, the noise and the shuffling.")
    flags.DEFINE_enum("precision", "float64", ["float32", "float64"], "Floating-point precision.")
    flags.DEFINE_bool("plot", True, "Also draw nullspace.png (needs: pip install -e \".[plots]\").")


@cli.guarded(interrupted_hint="nothing was written")
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected argument {argv[1]!r}: flags take the form --name=value")
    try:
        results = run_experiment(FLAGS.workdir, seed=FLAGS.seed, precision=FLAGS.precision, plot=FLAGS.plot)
    except MissingPlotsError as err:
        cli.fail(f"{err} (the numbers are in {os.path.join(FLAGS.workdir, 'nullspace.json')}; or pass --noplot)")
    print(f"[tp_keras.nullspace] results in {os.path.join(FLAGS.workdir, 'nullspace.json')}"
          + (f", figure {results['figure']}" if "figure" in results else ""))


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags_one_line)
