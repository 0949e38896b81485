"""`python -m lenet_tf.train`: see `lenet_tf.commands.train`."""

from lenet_tf.commands.train import main

if __name__ == "__main__":
    main()
