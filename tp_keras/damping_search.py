"""The GNT damping search: `python -m tp_keras.damping_search` runs tp_keras/paper/damping_search.py."""
import runpy

if __name__ == "__main__":
    runpy.run_module("tp_keras.paper.damping_search", run_name="__main__", alter_sys=True)
