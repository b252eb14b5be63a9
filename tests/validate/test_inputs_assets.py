"""String inputs looked up in vocabularies stored in files: the generated words are the file's."""

import numpy as np
import pytest
import saved_models

from graphopt import model_io
from graphopt.graph.model import ModelGraph
from graphopt.rewrite import rewrite_model
from graphopt.validate import validate_models
from graphopt.validate.consumers import input_uses
from graphopt.validate.inputs import generate_cases
from graphopt.validate.loaders import signature_specs
from graphopt.validate.validation import _words
from graphopt.validate.vocabulary import UNKNOWN_WORDS, string_vocabulary

WORDS = tuple(f"word-{i}" for i in range(37))
BUILDERS = {  # name -> (builder, its input, file has word<TAB>id lines)
    "keras": (saved_models.build_keras_vocabulary_file, "genre", False),
    "text-file": (saved_models.build_text_file_table, "tag", True),
    "feature-column": (saved_models.build_feature_column_vocabulary_file, "city", False),
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def vocabulary_model(request, tmp_path_factory):
    build, key, columns = BUILDERS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    vocabulary = saved_models.write_vocabulary(str(root / "vocabulary.txt"), WORDS, columns)
    return build(str(root / "m"), vocabulary), key


def test_the_vocabulary_file_is_read_for_its_own_input(vocabulary_model):
    path, key = vocabulary_model
    meta = model_io.read_model(path).meta_graph
    name = next(s for s, spec in signature_specs(meta).items() if key in spec.inputs)
    assert (
        input_uses(ModelGraph(meta), path)[name][key].words == WORDS
    )  # in file order; key_index 0 cuts the ids off
    assert string_vocabulary(ModelGraph(meta), path) == WORDS
    assert not getattr(
        input_uses(ModelGraph(meta))[name].get(key), "words", ()
    )  # without the model's directory


def test_generated_inputs_reach_every_word_of_the_file(vocabulary_model):
    path, key = vocabulary_model
    meta = model_io.read_model(path).meta_graph
    name = next(s for s, spec in signature_specs(meta).items() if key in spec.inputs)
    spec, uses = signature_specs(meta)[name], input_uses(ModelGraph(meta), path)[name]
    generated, plan = generate_cases(
        spec, {}, _words(spec, None, string_vocabulary(ModelGraph(meta), path), uses), uses=uses
    )
    drawn = {w.decode() for case in generated for w in np.ravel(case.feeds[key])}
    assert set(WORDS) <= drawn and set(UNKNOWN_WORDS) <= drawn
    assert f"words from a {len(WORDS)}-word vocabulary and 1 unknown word" in plan.inputs[key]


def test_validate_passes_on_the_rewritten_model(vocabulary_model, tmp_path):
    path, key = vocabulary_model
    rewritten = str(tmp_path / "ev")
    assert rewrite_model(path, rewritten).wrote
    report = validate_models(path, rewritten, loader="both", oov=False)
    assert report.passed, report.format()
    assert all(f"{len(WORDS)}-word vocabulary" in plan.inputs[key] for plan in report.inputs.values())
