"""The nullspace experiment: `python -m tp_keras.nullspace` runs tp_keras/paper/nullspace.py, which implements it."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tp_keras.paper.nullspace", run_name="__main__", alter_sys=True)
