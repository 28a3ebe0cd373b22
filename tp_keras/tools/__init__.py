"""Benchmarks and profilers, above the runtime layer: `bench` (training throughput and memory of every method,
`python -m tp_keras.bench`), `loop_bench` (many batches per compiled call against one, `python -m
tp_keras.loop_bench`) and `op_profile` (where one compiled step's time goes, `python -m tp_keras.op_profile`).
They use `tp_keras.core` and `tp_keras.run`; nothing imports them but their commands."""
