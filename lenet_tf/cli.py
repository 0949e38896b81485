"""What every lenet-tf command line shares: quiet start-up and one-line errors."""

import argparse
import math
import os
import pathlib
import sys

# Exit status for bad input (the flag or file named in the one-line message), as argparse uses.
EXIT_USAGE = 2
# Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input from the user. The message is one line naming the file or flag at fault."""


class RunError(Exception):
    """A run failed for a reason outside its input, such as a lost worker. One line, status 1."""


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


def quiet_tensorflow():
    """Silences TensorFlow's C++ start-up chatter, which buries a command's own output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def require_file(path, flag):
    """Returns `path` as a `pathlib.Path` if it is a readable file, else raises `UsageError`.

    Args:
        path: The path the user gave.
        flag: The option it came from, such as `"--model"`, for the message.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder, expected a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{flag} {path}: not readable (permission denied)")
    return path


def _one_line(err):
    """The first non-empty line of an exception's message (or its type's name)."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


def run(main, argv=None):
    """Runs `main(argv)` and turns bad input into `error: <message>` and exit status 2.

    Bad input is a `UsageError`, an `MNISTDataError` (unreadable or malformed MNIST files), or
    an `OSError` that names a file (missing, unreadable, a folder, a full disk). A `RunError`
    (the run failed for a reason outside its input) prints one line too, with status 1. Ctrl-C
    that reaches here ends with status 130. Anything else is a bug and keeps its traceback.

    Args:
        main: Function taking the argument list and returning an exit status (or None).
        argv: Arguments; defaults to `sys.argv[1:]`.
    """
    # Deferred so that `--help` and argument errors answer before TensorFlow loads.
    from lenet_tf.data import MNISTDataError

    try:
        status = main(sys.argv[1:] if argv is None else argv)
    except (UsageError, MNISTDataError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        status = EXIT_USAGE
    except RunError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        status = 1
    except OSError as err:
        if err.filename is None:
            raise
        reason = err.strerror or _one_line(err)
        print(f"error: {err.filename}: {reason}", file=sys.stderr)
        status = EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    sys.exit(status or 0)
