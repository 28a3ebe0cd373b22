"""The algorithm: layers, learning rules (rules/), targets, losses, the step, the device loop, the Keras model, the
CNN, conversion of Keras models and the angle diagnostics. No file I/O and no flags; imports nothing from
`tp_keras.run`, `tp_keras.paper` or `tp_keras.search`; reads the reference's data (`tp_keras.reference`: the paper's
configurations are the library's defaults)."""
