"""Running experiments: Config, data, the factories both drivers use (`factories`: model, trainer, a worker's
folder), the single-device driver `experiment.train_and_evaluate` and the distributed trainer (`distribute`), the
run folder's files, stop requests, memory checks and the launcher's flags (`python -m tp_keras.launch`). Imports
`tp_keras.core` and the reference's data (`tp_keras.reference`), nothing above it."""
