"""The paper's tables: `python -m tp_keras.tables` runs tp_keras/paper/tables.py, which implements it."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tp_keras.paper.tables", run_name="__main__", alter_sys=True)
