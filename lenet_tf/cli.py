"""What every lenet-tf command line shares: quiet start-up and one-line errors."""

import os
import sys


class UsageError(Exception):
    """Bad input from the user. The message is one line naming the file or flag at fault."""


def quiet_tensorflow():
    """Silences TensorFlow's C++ start-up chatter, which buries a command's own output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(main, argv=None):
    """Runs `main(argv)` and turns bad input into `error: <message>` and exit status 2.

    Args:
        main: Function taking the argument list and returning an exit status (or None).
        argv: Arguments; defaults to `sys.argv[1:]`.
    """
    # Deferred so that `--help` and argument errors answer before TensorFlow loads.
    from lenet_tf.data import MNISTDataError

    try:
        status = main(sys.argv[1:] if argv is None else argv)
    except (UsageError, MNISTDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    sys.exit(status or 0)
