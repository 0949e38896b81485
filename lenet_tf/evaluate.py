"""`python -m lenet_tf.evaluate`: see `lenet_tf.commands.evaluate`."""

from lenet_tf.commands.evaluate import main

if __name__ == "__main__":
    main()
