"""The paper's facts and analyses. `facts` and `configs` are data that every layer may read (they import nothing
else of tp_keras); sweeps, tables, figures, the nullspace experiment, the damping search and the output-space
computation use `tp_keras.core`, `tp_keras.run` and `tp_keras.search`."""
