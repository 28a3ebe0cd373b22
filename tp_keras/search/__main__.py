"""`python -m tp_keras.search`: see tp_keras/search/cli.py."""
import sys

try:
    import optuna  # noqa: F401
except ImportError:
    print("error: the search needs Optuna: pip install 'tp_keras[search]'", file=sys.stderr)
    sys.exit(2)

from tp_keras.search.cli import main

sys.exit(main())
