"""What every lenet-tf command shares: parse first, quiet dependencies, one-line errors.

A command module defines `build_parser(prog)` and `execute(args)` and ends with

    def main(argv=None, prog=None):
        return base.run(build_parser, execute, argv, prog)

`run` parses the arguments before anything heavy is imported (so `--help` and a bad flag
answer at once), runs `execute` with TensorFlow's and the converters' own logs held back
(`--verbose` or `LENET_TF_VERBOSE=1` shows them), and turns the library's errors into one line
on stderr and an exit status: 2 for bad input, 1 for a failed run, 130 after Ctrl-C.
"""

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
import warnings

# Exit status for bad input (the flag or file named in the one-line message), as argparse uses.
EXIT_USAGE = 2
# Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
# Set to 1 to see what TensorFlow, Keras and the converters print, as `--verbose` does.
VERBOSE_ENV = "LENET_TF_VERBOSE"
# TensorFlow's switch for its oneDNN CPU kernels ("1" on, "0" off; unset: on only for some CPUs).
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# Python loggers of the dependencies that log on their own at INFO/WARNING level.
DEPENDENCY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "h5py", "jax")
DEPENDENCY_MODULES = r"(tensorflow|tf_keras|keras|tf2onnx|onnx|absl|tensorflow_datasets|google)(\.|$)"


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are one line, `error: <message>`, exit status 2.

    The standard parser prints its whole usage block before the error; in a log of an unattended
    run the fault then hides among the options. `--help` still prints the usage.
    """

    def error(self, message):
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def number_type(parse, accept, description):
    """An argparse `type` that parses with `parse` and accepts only values `accept` allows.

    Args:
        parse: `int` or `float`.
        accept: Predicate on the parsed value.
        description: What a valid value is, for the error ("a positive integer").

    Returns:
        A function from the argument's text to its value, raising `ArgumentTypeError`.

    Example:

    >>> positive_int("3")
    3
    """

    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {description}, got {text}")
        return value

    return convert


positive_int = number_type(int, lambda value: value >= 1, "a positive integer")
non_negative_int = number_type(int, lambda value: value >= 0, "an integer >= 0")
positive_float = number_type(float, lambda value: math.isfinite(value) and value > 0, "a positive number")
non_negative_float = number_type(float, lambda value: math.isfinite(value) and value >= 0, "a number >= 0")
seed = number_type(int, lambda value: 0 <= value < 2**32, "an integer in [0, 2**32)")


def check_writable(path, setting="out", folder_marker=None):
    """Fails early, before minutes of work, when `path` cannot be written or must not be replaced.

    Args:
        path: The file or folder a command will create or replace.
        setting: The setting it came from, for the message.
        folder_marker: For a folder output, the file marking a folder the command may replace
            (`lenet_tf.files.check_replaceable`); None for a file output.

    Returns:
        `path` as a `pathlib.Path`.

    Raises:
        SettingError: The nearest existing folder above `path` is not a writable folder.
        OSError: `path` holds something its output must not replace (a folder, for a file).
    """
    import pathlib

    from lenet_tf.errors import SettingError
    from lenet_tf.files import check_replaceable

    path = pathlib.Path(path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SettingError(setting, f"{path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SettingError(setting, f"{path}: cannot write in {parent} (permission denied)")
    check_replaceable(path, folder_marker)
    return path


def output_file(text):
    """An argparse `type` for a file a command writes: checked by `check_writable` at once.

    >>> output_file(tempfile.mkdtemp() + "/figures.json").name
    'figures.json'
    """
    from lenet_tf.errors import SettingError

    try:
        return check_writable(text)
    except SettingError as err:
        raise argparse.ArgumentTypeError(err.message) from None
    except OSError as err:
        raise argparse.ArgumentTypeError(f"{err.filename}: {err.strerror}") from None


def add_verbose_argument(parser):
    """Adds `--verbose`: show the dependencies' own logs (TensorFlow start-up, converters)."""
    parser.add_argument(
        "--verbose", action="store_true",
        help=f"also show what TensorFlow, Keras and the converters print (or set {VERBOSE_ENV}=1)",
    )  # fmt: skip


def add_data_dir_argument(parser, use=""):
    """Adds `--data-dir DIR`, the MNIST folder, found as `lenet_tf.data.load_mnist` finds it.

    Args:
        parser: The command's parser.
        use: What the command reads MNIST for, appended to the help (", for ...").
    """
    parser.add_argument(
        "--data-dir", metavar="DIR",
        help=f"folder with the MNIST IDX files{use} (default: $LENET_MNIST_DIR, else tensorflow-datasets)",
    )  # fmt: skip


def prefer_onednn():
    """Turns TensorFlow's oneDNN CPU kernels on for this process, unless the user chose.

    They train LeNet-5 faster than TensorFlow's own kernels (`docs/performance.md#onednn`), which
    are TensorFlow's default on CPUs without AVX-512 VNNI, BF16 or AMX. TensorFlow reads
    `TF_ENABLE_ONEDNN_OPTS` once, when it loads: call this before importing it.
    """
    os.environ.setdefault(ONEDNN_ENV, "1")


def wants_dependency_logs(args=None):
    """Whether the user asked to see the dependencies' logs (`--verbose` or `LENET_TF_VERBOSE`)."""
    flag = getattr(args, "verbose", False)
    return flag is True or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def quiet_dependencies(enabled=True):
    """Holds back what TensorFlow and the converters print, so a command shows its own output.

    TensorFlow's C++ start-up lines are written to file descriptor 2 before its log settings
    are read (so `TF_CPP_MIN_LOG_LEVEL` cannot hide them), and the TFLite converter prints from
    C++ too. Inside the block, descriptor 2 goes to a temporary file, while `sys.stderr` (this
    package's messages, Python tracebacks) still reaches the real stderr. If the block fails
    with an unexpected exception, what was held back is printed, since it may explain it.

    Args:
        enabled: False runs the block unchanged (for `--verbose`).
    """
    if not enabled:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in DEPENDENCY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stderr.flush()
    real_stderr = os.dup(2)
    saved_stream = sys.stderr
    with tempfile.TemporaryFile() as held, warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=DEPENDENCY_MODULES)
        os.dup2(held.fileno(), 2)
        if _writes_to_descriptor_2(saved_stream):
            sys.stderr = open(os.dup(real_stderr), "w", buffering=1, encoding="utf-8", errors="replace")
        try:
            yield
        except (Exception, KeyboardInterrupt) as err:
            if not _is_expected(err):
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            if sys.stderr is not saved_stream:
                sys.stderr.close()
                sys.stderr = saved_stream
            os.dup2(real_stderr, 2)
            os.close(real_stderr)


def _writes_to_descriptor_2(stream):
    # A stream that something already redirected (pytest's capture, a notebook) stays as it is.
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _is_expected(err):
    from lenet_tf.errors import LenetError, RunFailed

    return isinstance(err, (LenetError, RunFailed, KeyboardInterrupt, OSError, SystemExit))


def flag_name(setting, flags=None):
    """The command-line flag of a setting: `flags[setting]`, else `--` + its dashed name."""
    return (flags or {}).get(setting, "--" + setting.replace("_", "-"))


def run(build_parser, execute, argv=None, prog=None, flags=None):
    """Parses `argv`, runs `execute(args)` quietly, and exits with its status.

    Bad input (a `LenetError`, or an `OSError` naming a file) prints `error: <one line>` and
    exits with 2; a `SettingError` is named by its flag. `RunFailed` prints one line and exits
    with 1; Ctrl-C exits with 130. Anything else is a bug and keeps its traceback.

    Args:
        build_parser: Function `(prog) -> ArgumentParser`; `prog=None` keeps its default name.
        execute: Function `(args) -> exit status or None`. Imports what it needs itself.
        argv: Arguments; defaults to `sys.argv[1:]`.
        prog: Program name for usage lines (`"lenet-tf train"` from the entry point).
        flags: `{setting: flag}` where a flag is not `--` + the setting's dashed name.
    """
    from lenet_tf.errors import LenetError, RunFailed, SettingError, first_line

    args = build_parser(prog).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with quiet_dependencies(not wants_dependency_logs(args)):
            status = execute(args)
    except SettingError as err:
        print(f"error: {flag_name(err.setting, flags)}: {err.message}", file=sys.stderr)
        status = EXIT_USAGE
    except LenetError as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        status = EXIT_USAGE
    except RunFailed as err:
        print(f"error: {first_line(err)}", file=sys.stderr)
        status = 1
    except OSError as err:
        if err.filename is None:
            raise
        print(f"error: {err.filename}: {err.strerror or first_line(err)}", file=sys.stderr)
        status = EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    sys.exit(status or 0)
