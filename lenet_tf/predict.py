"""`python -m lenet_tf.predict`: see `lenet_tf.commands.predict`."""

from lenet_tf.commands.predict import main

if __name__ == "__main__":
    main()
