"""The command-line layer: thin commands over the library, and the `lenet-tf` entry point.

Only this package knows flags, messages and exit statuses; the library raises the errors of
`lenet_tf.errors` and this layer turns them into one line on stderr (see `base.run`).
"""
