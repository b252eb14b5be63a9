"""Records tests/rewrite/golden/course_rewrites.json: the fingerprint of each course-model rewrite.

Run from the repository root: ``python -m tests.rewrite.record_golden``. Rerun only when a change
to the rewrite's output is intended, and say so in the commit.
"""

import json
import os
import sys
import tempfile

from tests.conftest import FORMS
from tests.rewrite.fingerprint import fingerprint

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "course_rewrites.json")
TARGETS = ("ev", "stock")


def record(tmp):
    from graphopt.course.models import build_model
    from graphopt.rewrite import rewrite_model

    out = {}
    for form in FORMS:
        model_dir = os.path.join(tmp, form)
        build_model(model_dir, form=form, epochs=1, seed=7)  # as tests/conftest.py's course_models
        for target in TARGETS:
            rewritten = os.path.join(tmp, f"{form}-{target}")
            rewrite_model(model_dir, rewritten, target=target)
            out[f"{form}/{target}"] = fingerprint(rewritten)
            print(f"recorded {form}/{target}", file=sys.stderr)
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        result = record(tmp)
    with open(GOLDEN, "w") as f:
        json.dump(result, f, indent=0, sort_keys=True)
        f.write("\n")
