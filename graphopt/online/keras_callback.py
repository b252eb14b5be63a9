"""DeltaCallback: a Keras callback writing a delta of the model's EmbeddingVariables every N
steps and/or seconds while it trains."""

import time

import keras

from graphopt.errors import GraphoptError
from graphopt.online.writer import DeltaWriter


class DeltaCallback(keras.callbacks.Callback):
    """Writes a delta beside the served version ``version_dir`` every ``every_steps`` batches
    and/or every ``every_seconds`` (checked at the end of each batch), and one when training ends.

    ``tables``: as DeltaWriter's (a dict, a list of EmbeddingVariables, or a model); None takes
    the EmbeddingVariables of the model being trained. ``since``: the step the served version was
    trained to (None: the first delta holds every row). ``dense``: as DeltaWriter's; True takes
    the model being trained's (its kernels and biases, so serving computes what it computes).
    Written paths collect in ``written``.
    """

    def __init__(
        self,
        version_dir,
        tables=None,
        every_steps: int | None = None,
        every_seconds: float | None = None,
        since: int | None = None,
        dense=None,
    ):
        super().__init__()
        if every_steps is None and every_seconds is None:
            raise GraphoptError("DeltaCallback needs every_steps, every_seconds or both")
        for label, value in (("every_steps", every_steps), ("every_seconds", every_seconds)):
            if value is not None and not value > 0:
                raise GraphoptError(f"{label} must be greater than 0, got {value}")
        self.version_dir, self.tables, self.since, self.dense = version_dir, tables, since, dense
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.writer: DeltaWriter | None = None
        self.written: list[str] = []
        self._batches = 0
        self._last = time.monotonic()

    def on_train_begin(self, logs=None):
        if self.writer is None:
            tables = self.tables if self.tables is not None else self.model
            dense = self.model if self.dense is True else self.dense
            self.writer = DeltaWriter(self.version_dir, tables, self.since, dense)
        self._last = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        due = self.every_steps is not None and self._batches % self.every_steps == 0
        if due or (self.every_seconds is not None and time.monotonic() - self._last >= self.every_seconds):
            self._write()

    def on_train_end(self, logs=None):
        self._write()

    def _write(self):
        path = self.writer.write()
        if path is not None:
            self.written.append(path)
        self._last = time.monotonic()
