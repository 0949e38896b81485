"""`python -m lenet_tf COMMAND ...`, the same as the `lenet-tf` entry point."""

from lenet_tf.commands.dispatch import main

main()
