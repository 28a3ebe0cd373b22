"""The paper's analyses: sweeps, tables, figures, the nullspace experiment, the damping search and the output-space
computation. They use `tp_keras.core`, `tp_keras.run` and `tp_keras.search`, and read the paper's configurations and
facts from `tp_keras.reference` (the data at the bottom of the layers)."""
