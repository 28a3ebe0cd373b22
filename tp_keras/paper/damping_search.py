"""The GNT damping search of docs/semantics.md §13.4 (`gn_damping_hpsearch`), as its own command.

    python -m tp_keras.damping_search --method=ddtp_linear --data_dir=../shared/data/mnist \
        [--search_epochs=3] [--grid=0,1e-5,1e-4,1e-3,1e-2,1e-1,1,10] [any launcher flag]

Trains the configured run for `--search_epochs` epochs (the reference: 3) through the launcher's own
`train_and_evaluate` (its workdir gets the usual files), then makes one pass over the shuffled training set that
only computes the method's updates — no optimizer step, no feedback training — and, every `--log_interval`
batches, the angle between each hidden layer's update and the GNT update for every λ of the grid (one Jacobian and
one eigendecomposition per layer serve all λ). The λ with the smallest mean angle is the layer's best.

Unlike the reference, which prints the result and aborts the run, this writes `damping_search.json` (the mean
angle of every λ and layer, and the best λ per layer) and prints the `--gn_damping=...` flag to pass to an
angle-logging run.

Its workdir (default runs/<dataset>_<method>_damping_search) is a launcher workdir with the launcher's rules: one
that holds a run is refused in one line unless `--resume` continues it (training up to --search_epochs, then
searching on its weights) or `--overwrite` replaces it.
"""
from __future__ import annotations

import math
import os

import numpy as np
from absl import app, flags

from tp_keras.core.rules import get_rule
from tp_keras.run import cli, launch  # launch defines the launcher's flags, which this command shares
from tp_keras.run.config import ConfigError, check_integer
from tp_keras.run.data import dataset_options, load_dataset
from tp_keras.run.memory import check_dataset_fits
from tp_keras.run.rundir import write_json

FLAGS = flags.FLAGS
flags.DEFINE_integer("search_epochs", 3, "Training epochs before the search pass (the reference: 3).")
flags.DEFINE_list("grid", [str(v) for v in (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)],
                  "Damping values λ to compare.")


def search(trainer, split, grid, *, batch_size: int, log_interval: int, seed: int) -> dict:
    """Mean GNT angle per (λ, hidden layer) over the batches i % log_interval == 0 of one shuffled pass over
    `split`, and the best λ per layer. Nothing is updated."""
    import tensorflow as tf
    from tp_keras.core import diagnostics as D
    from tp_keras.core import step as S

    model = trainer.model

    @tf.function
    def angles(x, y):
        updates = S.compute_updates(model, x, y, forward=True, feedback=False)
        return D.gnt_angles_for_dampings(model, updates, y, grid)

    perm = np.random.default_rng([seed, 10**6]).permutation(len(split.x))
    x_all, y_all = split.x[perm], split.y[perm]
    logged = [angles(tf.constant(x_all[i:i + batch_size]), tf.constant(y_all[i:i + batch_size]))
              for i in range(0, len(x_all), batch_size * log_interval)]
    table = np.mean([a.numpy() for a in logged], axis=0)  # (len(grid), L−1)
    best = [float(grid[j]) for j in np.argmin(table, axis=0)]
    return {"grid": list(grid), "mean_angles": table.tolist(), "best": best, "logged_batches": len(logged)}


@cli.guarded(interrupted_hint="the search did not finish")
def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected argument {argv[1]!r}: flags take the form --name=value")
    from tp_keras.run.experiment import train_and_evaluate
    from tp_keras.run.factories import build_model, build_trainer
    grid = launch._floats("grid", FLAGS.grid)
    if not grid or any(not math.isfinite(v) or v < 0 for v in grid):
        raise ConfigError("grid", "give one or more finite damping values >= 0, e.g. --grid=0,1e-4,1e-2,1")
    check_integer("search_epochs", FLAGS.search_epochs, 0, example=3)
    config = launch.config_from_flags()
    config.epochs = FLAGS.search_epochs
    config.log_angles = False
    config.validate()
    if not get_rule(config.method).uses_targets:
        raise ConfigError("method", f"{config.method} has no forward targets to compare with GNT; choose a "
                                    "TP method")
    if get_rule(config.method).batch_dependent:  # diagnostics.check_angles_defined, before any work
        raise ConfigError("method", f"{config.method} batch-normalises its layers, so its GNT angles do not exist; "
                                    "choose a TP method without batch normalisation")
    workdir = FLAGS.workdir or os.path.join("runs", f"{config.dataset}_{config.method}_damping_search")
    launch.check_workdir(workdir, resume=FLAGS.resume, overwrite=FLAGS.overwrite)
    dataset = load_dataset(**dataset_options(config))
    check_dataset_fits(config, dataset)
    trainer = build_trainer(config, build_model(config, dataset))
    try:
        summary = train_and_evaluate(config, workdir, dataset, trainer=trainer, resume=FLAGS.resume,
                                     overwrite=FLAGS.overwrite)
    except ConfigError as err:
        if err.flag != "epochs":
            raise
        # This command's epochs are --search_epochs (its --epochs is not used).
        raise ConfigError("search_epochs", str(err).removeprefix("--epochs: ").replace(
            "--epochs=", "--search_epochs=")) from None
    if summary["status"].startswith("diverged"):
        raise ConfigError("search_epochs", f"the training before the search {summary['status']}; lower the "
                                           "learning rates or --search_epochs")
    result = search(trainer, dataset.train, grid, batch_size=config.batch_size,
                    log_interval=config.log_interval, seed=config.seed)
    result.update(method=config.method, dataset=config.dataset, seed=config.seed, epochs_trained=config.epochs,
                  log_interval=config.log_interval)
    path = os.path.join(workdir, "damping_search.json")
    write_json(path, result)
    layers = len(result["best"])
    print(f"{'λ':>10}" + "".join(f"{'layer ' + str(i + 1):>10}" for i in range(layers)))
    for value, row in zip(grid, result["mean_angles"]):
        print(f"{value:>10g}" + "".join(f"{a:>10.2f}" for a in row))
    print(f"[tp_keras.damping_search] best λ per hidden layer: --gn_damping={','.join(f'{v:g}' for v in result['best'])}"
          f" (mean GNT angles over {result['logged_batches']} batches; {path})")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags_one_line)
