"""What every command of tp_keras does when it fails: one line on stderr, `error: <what was wrong>; <what to do>`,
no traceback, and a non-zero exit status (2; 128 + the signal's number, 130 or 143, when SIGINT or SIGTERM
stopped it).

`guarded(main)` wraps a command's main function: SIGTERM becomes an interrupt like Ctrl-C, and the errors that
describe a bad setting or a faulty environment (ConfigError, DataError, RunDirError, any other OSError, memory
exhaustion, an interrupt) become that one line. Anything else is a bug and keeps its traceback.
`parse_flags_one_line` is an absl flags parser for `app.run(main, flags_parser=...)` whose flag errors are one
line too.

Importing this module does not import TensorFlow.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
import sys

from tp_keras.run import faults
from tp_keras.run.config import ConfigError
from tp_keras.run.data import DataError
from tp_keras.run.rundir import RunDirError, fix_for, reason

EXIT_ERROR = 2
# The user's errors: their message is the one line.
USER_ERRORS = (ConfigError, DataError, RunDirError, faults.KillSpecError)


def fail(message: str, status: int = EXIT_ERROR):
    """Prints `error: <message>` (its first line) on stderr and exits with `status`."""
    print(f"error: {first_line(message)}", file=sys.stderr, flush=True)
    sys.exit(status)


def first_line(text) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def op_error_text(err) -> str:
    """The first line of an error's message without TensorFlow's graph-node and op decorations."""
    text = first_line(getattr(err, "message", "") or err)
    text = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", text).strip()
    return text or type(err).__name__


def _out_of_memory(err) -> bool:
    return isinstance(err, MemoryError) or type(err).__name__ == "ResourceExhaustedError"


def describe(err: BaseException, user_errors=()) -> str | None:
    """The one line for an expected error, or None for a bug."""
    if isinstance(err, USER_ERRORS + tuple(user_errors)):
        return first_line(err)
    if _out_of_memory(err):
        detail = op_error_text(err) if str(err) else ""
        return ("out of memory" + (f" ({detail[:160]})" if detail else "")
                + "; lower --batch_size or the layer sizes, or run on a machine with more memory")
    if isinstance(err, OSError):
        path = err.filename if err.filename is not None else "a file"
        return f"{path}: {reason(err, str(path))}; {fix_for(err, 'path')}"
    return None


def guarded(main=None, *, user_errors=(), interrupted_hint: str = ""):
    """Decorator: runs `main` with SIGTERM as an interrupt and its expected errors as one line (see the module
    docstring). `user_errors`: the command's own error classes whose message is the line; `interrupted_hint`:
    appended to the line of an interrupt that did not say where the run stopped."""
    if main is None:
        return functools.partial(guarded, user_errors=user_errors, interrupted_hint=interrupted_hint)

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        previous = faults.terminate_as_interrupt()
        try:
            return main(*args, **kwargs)
        except faults.Interrupted as err:
            said = str(err)
            fail(said if said != f"interrupted by {err.signal_name}" or not interrupted_hint
                 else f"{said}; {interrupted_hint}", err.exit_status)
        except KeyboardInterrupt:
            fail("interrupted by SIGINT" + (f"; {interrupted_hint}" if interrupted_hint else ""), 130)
        except Exception as err:  # noqa: BLE001 - sorted into user errors (one line) and bugs (re-raised)
            line = describe(err, user_errors)
            if line is None:
                raise
            fail(line)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return wrapper


def exit_without_teardown(code=0):
    """Ends the process as `sys.exit(code)` would (None: 0; a string: printed on stderr, status 1), without the
    interpreter's teardown: once TensorFlow and Keras are loaded, freeing their thousands of modules and native
    objects costs over a second of CPU on the 2-core CPU (docs/performance.md, "Start-up and imports") and writes
    nothing. The atexit handlers (logging's flush among them) run and stdout and stderr are flushed first; with a
    non-daemon thread still running, it exits the ordinary way, which waits for the thread. For a command's
    entry point, after its work is done and its files are closed."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    import threading
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be written there anyway
            pass
    os._exit(status)


FLAGFILE_EXAMPLE = "launch/mnist_DDTPlinear.flags"


def flagfile_problem(path: str, err: BaseException) -> str:
    """What is wrong with a flagfile that cannot be read as text and the fix: '<path>: <what>; <fix>'."""
    if isinstance(err, UnicodeDecodeError):
        return (f"{path}: not a text file (byte 0x{err.object[err.start:err.start + 1].hex()} at position "
                f"{err.start} is not UTF-8); name a flagfile of --name=value lines, e.g. {FLAGFILE_EXAMPLE}")
    if isinstance(err, IsADirectoryError) or os.path.isdir(path):
        return f"{path} is a folder; name a flagfile (a file of --name=value lines), e.g. {FLAGFILE_EXAMPLE}"
    if isinstance(err, OSError):
        if err.errno == errno.ENOENT:
            return (f"{path}: no such file (ENOENT); check the path (the paper's cells are launch/*.flags, "
                    f"e.g. {FLAGFILE_EXAMPLE})")
        return f"{path}: {reason(err, path)}; {fix_for(err, '--flagfile')}"
    return f"{path}: {first_line(err)}; check the file, e.g. against {FLAGFILE_EXAMPLE}"


def _flagfile_in_traceback(err: BaseException) -> str | None:
    """The flagfile absl was reading when `err` was raised (the innermost, for nested flagfiles), or None."""
    name, tb = None, err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_get_flag_file_lines":
            name = tb.tb_frame.f_locals.get("filename", name)
        tb = tb.tb_next
    return name


def flag_error_line(err: BaseException) -> str:
    """The one line, with its fix, for an error of absl's flag parsing."""
    from absl import flags
    if isinstance(err, flags.UnrecognizedFlagError):
        name = err.flagname
        suggestions = [f"--{s.strip()}" for s in getattr(err, "suggestions", None) or () if s.strip()]
        if not suggestions:  # absl keeps them only in its message
            match = re.search(r"Did you mean: (.*?) \?", str(err))
            suggestions = [f"--{s.strip()}" for s in match.group(1).split(",")] if match else []
        if suggestions:
            return (f"--{name}: unknown flag; did you mean {' or '.join(suggestions)}? (--helpfull lists every "
                    "flag)")
        return f"--{name}: unknown flag; check its spelling (--helpfull lists every flag of this command)"
    if isinstance(err, flags.CantOpenFlagFileError):
        cause = err.__context__
        if isinstance(cause, OSError) and cause.filename is not None:
            return "--flagfile=" + flagfile_problem(str(cause.filename), cause)
    if isinstance(err, UnicodeDecodeError):
        return "--flagfile=" + flagfile_problem(_flagfile_in_traceback(err) or "?", err)
    return first_line(err).removeprefix("ERROR:: ")


def parse_flags_one_line(argv):
    """absl flags parser: a bad flag is one line naming the fix, exit status 2 (absl's own prints two lines and
    exits 1; an unreadable --flagfile raised a traceback)."""
    from absl import flags
    try:
        return flags.FLAGS(argv)
    except (flags.Error, UnicodeDecodeError) as err:
        fail(flag_error_line(err))


# Packages that Keras and TensorFlow import at their own start-up only for features no tp_keras command uses: Keras'
# image-gallery plots (matplotlib.pyplot) and its file editor's notebook display (IPython), TensorFlow's legacy
# Keras 2 sparse-input checks (scipy.sparse). Together a fifth of TensorFlow and Keras' import time on the 2-core
# CPU (docs/performance.md, "Start-up and imports"); each is imported as usual when something asks for it later.
OPTIONAL_AT_TENSORFLOW_IMPORT = ("matplotlib", "IPython", "scipy")


@contextlib.contextmanager
def without_modules(names):
    """Inside the block, importing any of `names` (top-level packages not yet imported) or their submodules raises
    ImportError, as if they were not installed (None in sys.modules: Python's documented way); after it, they
    import normally. For the optional imports of third-party packages (`try: import x except ImportError`)."""
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def import_tensorflow() -> None:
    """Imports Keras and TensorFlow without OPTIONAL_AT_TENSORFLOW_IMPORT (unless already imported): what the
    launcher's process never uses it does not load. In this process Keras' gallery plots then find no matplotlib;
    every other feature, and every number, is unchanged."""
    with without_modules(OPTIONAL_AT_TENSORFLOW_IMPORT):
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


def quiet_tensorflow_without_gpu(probe: bool = True, configure=None) -> None:
    """Imports TensorFlow and Keras (`import_tensorflow`). On a machine without an NVIDIA device (no
    /dev/nvidia*), imports them and runs TensorFlow's device probe with the process's C-level stderr sent to
    /dev/null, which hides the lines TensorFlow's C++ side writes there before its logging is set up (oneDNN notice,
    "Could not find cuda drivers", "failed call to cuInit"; tp_keras sets TF_CPP_MIN_LOG_LEVEL=2, which does not
    reach them). Nothing is hidden when the user set TF_CPP_MIN_LOG_LEVEL to 0 or 1 (asking for TensorFlow's logs)
    or the machine has a GPU; a failing import still raises, after stderr is back.
    probe=False skips the device probe (a multi-worker run must configure its collectives first); `configure()`,
    if given, runs just before it (e.g. to set TensorFlow's thread pools, which the probe fixes)."""
    import glob
    import os
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1") or glob.glob("/dev/nvidia[0-9]*"):
        import_tensorflow()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import_tensorflow()  # Keras' import loads more of TensorFlow's libraries, which log again
            import tensorflow as tf
            if configure is not None:
                configure()
            if probe:
                tf.config.list_logical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
