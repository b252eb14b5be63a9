"""The course's Keras form saves model.keras; its conversion keeps training and serving it."""

import os

import keras
import numpy as np
import pytest

import graphopt  # noqa: F401
from graphopt.course.data import generate_samples
from graphopt.course.models.features import dataset
from graphopt.course.train import main as train_main
from graphopt.keras import DynamicEmbedding


@pytest.fixture(scope="module")
def keras_file(course_models):
    model_dir, _ = course_models("keras")
    return os.path.join(model_dir, "model.keras")


def test_build_model_saves_a_compiled_trained_keras_file(keras_file):
    model = keras.saving.load_model(keras_file)
    assert model.optimizer is not None and int(model.optimizer.iterations.numpy()) > 0
    assert any(isinstance(layer, keras.layers.Embedding) for layer in model.layers)


@pytest.mark.exact
def test_continue_training_adds_rows_for_new_users(keras_file, tmp_path):
    from click.testing import CliRunner

    from graphopt.cli import main

    converted = str(tmp_path / "model_ev.keras")
    assert CliRunner().invoke(main, ["rewrite", keras_file, "-o", converted]).exit_code == 0
    trained = str(tmp_path / "trained.keras")
    code = train_main(
        [
            converted,
            "-o",
            trained,
            "--export",
            str(tmp_path / "serving" / "1"),
            "--rows",
            "600",
            "--new-users",
        ]
    )
    assert code == 0
    before, after = keras.saving.load_model(converted), keras.saving.load_model(trained)
    users = [
        layer
        for layer in after.layers
        if isinstance(layer, DynamicEmbedding) and layer.name == "userId_embedding"
    ]
    assert int(users[0].table.size()) > int(before.get_layer("userId_embedding").table.size())
    # The exported trained model predicts what the trained .keras model predicts, on the same
    # batch of 50: predict's default batches of 32 would split it into 32 + 18, other matmul
    # shapes whose kernels (chosen per CPU and per shape) may round differently.
    import tensorflow as tf

    samples = generate_samples(50, seed=3)
    x = next(iter(dataset(samples, batch_size=50)))[0]
    served = tf.saved_model.load(str(tmp_path / "serving" / "1"))
    np.testing.assert_array_equal(served.serve(x).numpy(), after.predict(x, batch_size=50, verbose=0))
