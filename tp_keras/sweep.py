"""Multi-seed sweeps: `python -m tp_keras.sweep` runs tp_keras/paper/sweep.py, which implements it."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tp_keras.paper.sweep", run_name="__main__", alter_sys=True)
