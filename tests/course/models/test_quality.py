"""The course's quality bar on the real samples: every form reaches ROC AUC >= 0.72."""

import pytest

from graphopt.course.models import FORMS, build_model


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_real_data_roc_auc(tmp_path, real_samples_path, form):
    report = build_model(str(tmp_path / form), form=form, data=real_samples_path, epochs=3, seed=42)
    assert report.rows == 22440 and report.test_rows == 4488
    assert report.roc_auc >= 0.72, report.format()
    assert report.accuracy > 0.65, report.format()
