"""Importing TensorFlow without its C++ start-up chatter."""

import os
import sys


def import_tensorflow_quietly():
    """Import TensorFlow and initialize its devices with fd 2 muted; return the module.

    TensorFlow's start-up lines (absl pre-init notices, oneDNN, CUDA probing) bypass
    TF_CPP_MIN_LOG_LEVEL. An import error still surfaces as the Python exception it is.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return tf
