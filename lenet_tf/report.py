"""`python -m lenet_tf.report`: see `lenet_tf.commands.report`."""

from lenet_tf.commands.report import main

if __name__ == "__main__":
    main()
