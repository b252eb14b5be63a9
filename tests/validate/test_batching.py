"""validate --batching: the batch-size dependence of a model's answers, measured as a note."""

import numpy as np

from graphopt.validate.batching import batch_dependence, describe
from graphopt.validate.inputs import InputCase


class _Model:
    """A stand-in model whose answer to a row depends on the batch it is in (or not)."""

    def __init__(self, depends):
        self.depends = depends

    def run(self, signature, feeds):
        x = feeds["x"].astype(np.float32)
        shift = np.float32(len(x) * 1e-6) if self.depends else np.float32(0)
        return {"y": x * 2 + shift}


def test_a_batch_independent_model_is_reported_bit_identical():
    case = InputCase("b0", 4, {"x": np.arange(4, dtype=np.float32)})
    worst = batch_dependence(_Model(False), "s", case)
    assert worst == {"y": (0.0, 0.0)}
    assert "bit-identical" in describe("tf2", "s", 4, worst)


def test_a_batch_dependent_model_is_measured():
    case = InputCase("b0", 4, {"x": np.arange(1, 5, dtype=np.float32)})
    absolute, relative = batch_dependence(_Model(True), "s", case)["y"]
    assert absolute > 0 and relative > 0
    assert "differs" in describe("tf2", "s", 4, {"y": (absolute, relative)})
    assert batch_dependence(_Model(True), "s", InputCase("c", None, {"x": np.float32(1)})) is None
