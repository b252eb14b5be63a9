"""Importing TensorFlow without its C++ start-up chatter on stderr."""

import os
import sys


def import_tensorflow_quietly():
    """Import TensorFlow and initialize its devices with fd 2 muted.

    TensorFlow's C++ start-up lines (absl pre-init notices, oneDNN, CUDA probing) bypass
    TF_CPP_MIN_LOG_LEVEL; users of a CLI should see only its reports and its errors.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow as tf

        tf.config.list_physical_devices()
        tf.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
