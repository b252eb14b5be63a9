"""Keep training the course's Keras model, write a delta to the version rewritten from its original
export (no --table), serve it: the served model computes exactly what the trained model computes."""

import os

import numpy as np
import pytest
from click.testing import CliRunner

from graphopt.cli import main
from graphopt.course.data import read_samples
from graphopt.course.models.features import feature_arrays
from graphopt.course.train import continue_training
from graphopt.serve.deltas import DeltaFeed
from graphopt.serve.repository import load_version


def run(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.exact
def test_keep_training_then_delta_serves_the_trained_model_on_400_real_rows(
    course_models, real_samples_path, tmp_path
):
    model_dir, _ = course_models("keras")
    served_dir, trained_dir = str(tmp_path / "serving" / "1"), str(tmp_path / "trained" / "1")
    run("rewrite", model_dir, "-o", served_dir)
    converted = str(tmp_path / "model_ev.keras")
    run("rewrite", os.path.join(model_dir, "model.keras"), "-o", converted)
    since = continue_training(
        converted, str(tmp_path / "trained.keras"), trained_dir, rows=600, new_users=True
    )
    out = run("delta", trained_dir, "-o", served_dir, "--since", str(since))  # tables matched by identity
    assert "wrote delta 1 of version 1" in out

    arrays = feature_arrays(read_samples(real_samples_path).take(np.arange(400)))
    served = load_version(served_dir, 1)  # what graphopt serve loads
    before = served.signature("serving_default").run(arrays)
    served.deltas = DeltaFeed("embedding_mlp", 1, served_dir, served.loaded, served.gate)
    assert served.deltas.poll() == 1, served.deltas.refused
    assert served.deltas.last_delta["dense_variables"] == 6  # the MLP's kernels and biases
    after = served.signature("serving_default").run(arrays)
    trained = load_version(trained_dir, 1)
    want = trained.signature("serving_default").run(arrays)
    assert set(after) == set(want)
    for name in want:
        assert want[name].shape[0] == 400
        assert np.abs(before[name] - want[name]).max() > 0  # the delta has something to do
        assert np.abs(after[name] - want[name]).max() == 0


@pytest.mark.exact
def test_delta_writer_during_fit_brings_the_served_version_to_the_trained_model(
    course_models, real_samples_path, tmp_path
):
    from graphopt.course.data import ID_FEATURES, generate_samples
    from graphopt.course.models.features import dataset
    from graphopt.keras import DynamicEmbedding
    from graphopt.keras.convert import load_keras_file
    from graphopt.online import DeltaWriter, export_model

    model_dir, _ = course_models("keras")
    served_dir = str(tmp_path / "serving" / "1")
    run("rewrite", model_dir, "-o", served_dir)
    converted = str(tmp_path / "model_ev.keras")
    run("rewrite", os.path.join(model_dir, "model.keras"), "-o", converted)
    model = load_keras_file(converted)
    since = max(
        int(layer.iterations.numpy()) for layer in model.layers if isinstance(layer, DynamicEmbedding)
    )
    # The Keras model's tables go to the served ones by identity, its kernels and biases by name.
    writer = DeltaWriter(served_dir, model, since=since, dense=model)
    assert len(writer.specs) == 10 and len(writer.dense) == 6
    samples = generate_samples(600, seed=7)
    samples.columns["userId"] = samples.columns["userId"] + ID_FEATURES["userId"]
    model.fit(dataset(samples, shuffle=True, seed=7), epochs=1, verbose=0)
    assert writer.write().endswith("deltas/1")
    trained_dir = str(tmp_path / "trained" / "1")
    export_model(model, trained_dir)

    arrays = feature_arrays(read_samples(real_samples_path).take(np.arange(400)))
    served = load_version(served_dir, 1)
    served.deltas = DeltaFeed("embedding_mlp", 1, served_dir, served.loaded, served.gate)
    assert served.deltas.poll() == 1, served.deltas.refused
    trained = load_version(trained_dir, 1)
    after = served.signature("serving_default").run(arrays)
    want = trained.signature("serving_default").run(arrays)
    for name in want:
        assert np.abs(after[name] - want[name]).max() == 0
