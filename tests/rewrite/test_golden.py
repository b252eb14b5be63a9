"""The rewrite of the course models is the one recorded before the structure refactor (issue #11).

The fixture golden/course_rewrites.json was recorded by ``python -m tests.rewrite.record_golden``
on the code before rewrite/ was restructured; see tests/rewrite/fingerprint.py for what it holds.
"""

import json
import os

import pytest

from graphopt.rewrite import rewrite_model
from tests.conftest import FORMS
from tests.rewrite.fingerprint import fingerprint
from tests.rewrite.record_golden import GOLDEN, TARGETS


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN) as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("form", FORMS)
def test_course_model_rewrite_matches_the_recorded_fingerprint(course_models, golden, tmp_path, form, target):
    model_dir, _ = course_models(form)
    out = os.path.join(tmp_path, "out")
    rewrite_model(model_dir, out, target=target)
    # Round-trip through JSON so tuples and lists compare alike.
    got = json.loads(json.dumps(fingerprint(out), sort_keys=True))
    want = golden[f"{form}/{target}"]
    for part in want:
        assert got[part] == want[part], f"{form}/{target}: {part} differs from the recorded rewrite"
