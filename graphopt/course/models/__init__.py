"""The course's Embedding+MLP (Deep Crossing: Feature -> Embedding -> Stacking -> MLP -> Scoring)
in the three forms users save it in, all trained on the same time-ordered split."""

import dataclasses
import json
import os
import time

from graphopt.course.data import generate_samples, read_samples, time_split
from graphopt.errors import GraphoptError
from graphopt.output import check_output_dir, staged_output

FORMS = ("keras", "feature-columns", "tf1")
REPORT_FILE = "training_report.json"
DEFAULT_SYNTHETIC_ROWS = 20000


@dataclasses.dataclass
class TrainingReport:
    """What ``graphopt build-model`` measured; also written as JSON beside the model."""

    form: str
    model_dir: str
    data: str
    rows: int
    train_rows: int
    test_rows: int
    epochs: int
    seed: int
    accuracy: float
    roc_auc: float
    pr_auc: float
    training_seconds: float

    def to_dict(self):
        return dataclasses.asdict(self)

    def format(self):
        return (
            f"{self.form:<16} test accuracy {self.accuracy:.4f}  ROC AUC {self.roc_auc:.4f}  "
            f"PR AUC {self.pr_auc:.4f}  rows {self.rows} ({self.train_rows} train / {self.test_rows} test)  "
            f"epochs {self.epochs}  trained in {self.training_seconds:.1f}s  -> {self.model_dir}"
        )


def _trainer(form):
    # Imported lazily: each form pulls in a different Keras.
    if form == "keras":
        from graphopt.course.models import keras_form as module
    elif form == "feature-columns":
        from graphopt.course.models import feature_column_form as module
    elif form == "tf1":
        from graphopt.course.models import tf1_form as module
    else:
        raise GraphoptError(f"unknown model form {form!r}; choose one of {', '.join(FORMS)}")
    return module.train_and_save


def build_model(out_dir, form="keras", data=None, epochs=3, seed=42, overwrite=False, on_epoch=None):
    """Train the Embedding+MLP in ``form`` on ``data`` (a CSV path; synthetic when None) and save it.

    ``on_epoch(epoch, loss)`` is called after each training epoch (1-based; loss on the training split).
    """
    if epochs < 1:
        raise GraphoptError(f"--epochs must be at least 1, got {epochs}")
    check_output_dir(out_dir, overwrite)
    train_and_save = _trainer(form)
    samples = read_samples(data) if data else generate_samples(DEFAULT_SYNTHETIC_ROWS, seed=seed)
    train, test = time_split(samples)

    from graphopt.course.models import metrics
    from graphopt.course.models.features import Normalization

    with staged_output(out_dir, overwrite) as stage:
        start = time.perf_counter()
        scores = train_and_save(train, test, Normalization.fit(train), stage, epochs, seed, on_epoch)
        seconds = time.perf_counter() - start
        report = TrainingReport(
            form=form,
            model_dir=os.path.abspath(out_dir),
            data=samples.source,
            rows=len(samples),
            train_rows=len(train),
            test_rows=len(test),
            epochs=epochs,
            seed=seed,
            accuracy=metrics.accuracy(test.labels, scores),
            roc_auc=metrics.roc_auc(test.labels, scores),
            pr_auc=metrics.pr_auc(test.labels, scores),
            training_seconds=round(seconds, 2),
        )
        with open(os.path.join(stage, REPORT_FILE), "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    return report
