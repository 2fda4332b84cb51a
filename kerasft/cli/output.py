"""What the command line prints: TensorFlow's start-up lines filtered out, --quiet and --verbose."""

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

# What TensorFlow's C++ side writes through absl: "I0000 00:00:1795.. 1125 port.cc:153] ..." and companions.
_CPP_LOG_LINE = re.compile(r"([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
                           r"|WARNING: All log messages before absl::InitializeLog\(\) "
                           r"|To enable the following instructions: )")


def start_tensorflow(verbose):
    """Imports TensorFlow; unless `verbose`, without the lines its C++ side writes on stderr.

    TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA stubs) from
    static initializers of two shared objects, the core and the profiler
    plugin, each with its own copy of absl, before absl logging is
    initialized: absl then sends every message to stderr and no environment
    variable reaches it, so `TF_CPP_MIN_LOG_LEVEL` cannot silence them. Hence
    stderr goes to a file while TensorFlow loads, and every other line of it
    is passed on. `TF_CPP_MIN_LOG_LEVEL=3`, which TensorFlow's own log sink
    reads, silences the later lines (CPU features, cuInit). Both happen in
    this process only: the library never changes a caller's logging.

    Args:
        verbose: bool. Leave TensorFlow's output as it is.
    """
    if "tensorflow" in sys.modules:
        return
    if verbose:
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr(keep=lambda line: not _CPP_LOG_LINE.match(line)):
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def native_stderr(keep):
    """Sends what is written on stderr (file descriptor 2, native code included) to a file meanwhile, then passes
    on the lines `keep` accepts."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if keep(line)))


@contextlib.contextmanager
def output_filters(args):
    """--quiet drops Python warnings; unless --verbose, TensorFlow's Python log lines (tf.function retracing)
    and the data loaders' (the summary holds them) go too."""
    loggers = [logging.getLogger(name) for name in ("kerasft.data", "tensorflow")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        if args.quiet:
            warnings.simplefilter("ignore")
        if not args.verbose:
            for logger in loggers:
                logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def note(args, message):
    """Prints a progress line, unless --quiet."""
    if not args.quiet:
        print(message, flush=True)


def verbose(args):
    """`fine_tune`'s and `tune`'s `verbose`: 0 with --quiet, 2 (Keras' progress bars too) with --verbose, else 1
    (a line per phase, epoch or trial, with estimates of what remains)."""
    return 0 if args.quiet else 2 if args.verbose else 1
