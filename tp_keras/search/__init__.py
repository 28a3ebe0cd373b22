"""Hyper-parameter search and seed sweeps on Optuna (the `search` extra: `pip install 'tp_keras[search]'`).

    python -m tp_keras.search --flagfile=launch/<cell>.flags --trials=20 [--workers=K] [--storage=URL]

Modules: `cli` (the search command), `space` (launch/spaces/<method>.space files), `runs` (a run as launcher
flags; one run trained in-process), `engine` (the study as a queue of named runs: storage, heartbeat and
retries, the driver of local worker processes), `worker` (the worker process: objective, pruners), `results`
(best.flags, trials.csv, figures), `options` (command-line options shared with `tp_keras.sweep`).
Importing this package imports neither Optuna nor TensorFlow.
"""
