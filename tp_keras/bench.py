"""The training benchmark: `python -m tp_keras.bench` runs tp_keras/tools/bench.py, which implements it."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tp_keras.tools.bench", run_name="__main__", alter_sys=True)
