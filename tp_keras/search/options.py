"""Command-line options shared by `python -m tp_keras.search` and `python -m tp_keras.sweep` (imports no Optuna:
`--report_only` of a sweep and `--help` work without it)."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from tp_keras.run import faults


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line ("error: ..."), exit status 2, without the usage block."""

    def error(self, message):
        print(f"error: {message} (--help lists the options)", file=sys.stderr)
        sys.exit(2)


def add_engine_arguments(parser, workers_help: str) -> None:
    parser.add_argument("--workers", type=int, default=1, help=workers_help)
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///<out>/study.db); a PostgreSQL or "
                                          "MySQL URL lets several machines join the study")
    parser.add_argument("--study", help="study name in the storage (default: the --out folder's name)")
    parser.add_argument("--gpus", default="", help="comma-separated GPU ids; worker k gets CUDA_VISIBLE_DEVICES="
                                                   "gpus[k %% len(gpus)]")
    parser.add_argument("--trials_per_worker", type=int, default=10,
                        help="trials a worker process runs before a fresh one replaces it (bounds TensorFlow's "
                             "memory; default 10)")
    parser.add_argument("--heartbeat", type=int, default=10, help="seconds between a worker's heartbeats in the "
                                                                  "database (default 10)")
    parser.add_argument("--grace", type=int, default=60,
                        help="seconds without a heartbeat after which a running trial counts as lost and is "
                             "retried (default 60; keep it well above --heartbeat)")
    parser.add_argument("--runner", default="tp_keras.search.runs", help=argparse.SUPPRESS)  # tests: a fake trainer


def check_engine_arguments(parser, args) -> None:
    for name in ("workers", "trials_per_worker", "heartbeat", "grace"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.grace <= args.heartbeat:
        parser.error(f"--grace={args.grace} must exceed --heartbeat={args.heartbeat}, or live trials would be "
                     "taken for lost")
    args.gpus = [g for g in args.gpus.split(",") if g.strip()]


def worker_failure_line(slot: int, code: int, line: str, retried: list[int], log_path: str) -> str:
    """One line for a worker process that died."""
    requeued = f"; its trial {', '.join(map(str, retried))} is re-queued" if retried else ""
    return f"worker {slot} FAILED (exit status {code}): {line}{requeued} [log {log_path}]"


def run_command(run, one_line_errors: tuple = ()) -> int:
    """Runs `run()` (the command's work, returning its exit status) with SIGTERM taken as Ctrl-C, and maps what it
    raises to the exit statuses both commands document: an error of `one_line_errors` or the engine's, or a
    SystemExit carrying a message -> its one line, 2; the study database failing -> its one line, 1; an interrupt
    the command did not handle itself -> one line, 130 (SIGINT) or 143 (SIGTERM). Anything else propagates with its traceback."""
    from tp_keras.search import engine
    try:
        with sigterm_as_interrupt():
            return run()
    except (*one_line_errors, engine.EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        message = engine.database_failure(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    except SystemExit as err:
        if isinstance(err.code, str):
            print(err.code, file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt as err:
        name = getattr(err, "signal_name", "SIGINT")
        print(f"error: interrupted by {name}; rerun the same command to resume", file=sys.stderr)
        return 128 + int(getattr(signal, name))


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within: SIGTERM (kill, a job scheduler) stops the command like Ctrl-C, so it stops its workers cleanly
    instead of orphaning them."""
    def interrupt(signum, frame):
        raise faults.Interrupted("SIGTERM")
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
