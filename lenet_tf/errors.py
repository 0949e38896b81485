"""The errors the library raises about values: bad files, bad data, bad settings.

Each message is one line that names the file or the value at fault and the problem, so that a
command can print it as it is. None of them knows about flags or exit codes: the commands in
`lenet_tf.commands` map them to one-line messages and exit statuses.

    from lenet_tf.errors import LenetError
    try:
        model = load_lenet5("runs/paper/model.keras")
    except LenetError as err:
        print(err)        # "runs/paper/model.keras: no such file"
"""


class LenetError(Exception):
    """Base of the errors about input: a file, an array or a setting that cannot be used."""


class MNISTDataError(LenetError, ValueError):
    """MNIST cannot be read: a missing folder, a malformed IDX file, no download possible."""


class ImageError(LenetError, ValueError):
    """An image file that cannot be read as a digit. The message is `<path>: <problem>`."""


class ModelFileError(LenetError, ValueError):
    """A model file that cannot be loaded: missing, corrupt, unsafe, or not a LeNet-5."""


class ArtifactError(LenetError, ValueError):
    """An exported artifact that cannot be run: missing, corrupt, or not the image contract."""


class RunFolderError(LenetError):
    """A run folder that cannot be used as asked: finished, locked, or holding other settings."""


class SettingError(LenetError, ValueError):
    """A setting with a value that cannot work.

    Args:
        setting: The name of the setting (a `TrainConfig` field or a function argument), so
            that a command can name the flag it came from.
        message: What is wrong with its value, one line.
    """

    def __init__(self, setting, message):
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


class RunFailed(Exception):
    """A run failed for a reason outside its input, such as a lost worker of a cluster."""


def first_line(err):
    """The first non-empty line of an exception's message, or its type's name.

    Dependencies raise multi-line messages (TensorFlow, onnxruntime); a one-line error quotes
    only their first line.

    >>> first_line(ValueError("\\nbad shape\\n  at line 3"))
    'bad shape'
    """
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__
