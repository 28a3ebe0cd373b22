"""Where a compiled step's time goes: `python -m tp_keras.op_profile` runs tp_keras/tools/op_profile.py, which
implements it."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tp_keras.tools.op_profile", run_name="__main__", alter_sys=True)
