"""The paper's figures: `python -m tp_keras.figures` runs tp_keras/paper/figures.py, which implements it."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tp_keras.paper.figures", run_name="__main__", alter_sys=True)
