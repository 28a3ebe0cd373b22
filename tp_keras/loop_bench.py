"""Steps per call benchmark: `python -m tp_keras.loop_bench` runs tp_keras/tools/loop_bench.py, which implements it."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tp_keras.tools.loop_bench", run_name="__main__", alter_sys=True)
