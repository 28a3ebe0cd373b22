"""The launcher (one training run): `python -m tp_keras.launch` runs tp_keras/run/launch.py, which implements it."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tp_keras.run.launch", run_name="__main__", alter_sys=True)
