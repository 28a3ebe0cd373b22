"""Running experiments: Config, data, `train_and_evaluate`, the run folder's files, distribution, stop requests,
memory checks, the launcher's flags (`python -m tp_keras.launch`) and the benchmarks. Imports `tp_keras.core` and
the reference's data (`tp_keras.reference`), nothing above it."""
