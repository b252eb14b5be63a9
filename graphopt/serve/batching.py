"""Server-side request batching as TF Serving does it (``--enable-batching``).

Predict requests for the same model version and signature, from different clients, wait in one
queue; batch threads take the oldest batch that is full or has waited ``batch_timeout_micros``
(at once with the default 0 whenever a thread is free, so batches grow exactly while the threads
are busy), merge its requests along the batch dimension, pad it up to the next of
``allowed_batch_sizes`` by repeating the first example, run the signature once and split every
output back by each request's rows. As in TF Serving's BatchingSession:

- a request larger than ``max_batch_size`` is refused (INVALID_ARGUMENT, "Task size N is larger
  than maximum input batch size M"), or, with ``enable_large_batch_splitting``, cut into pieces of
  ``max_execution_batch_size`` rows that may ride in different batches and are joined again;
- at most ``max_enqueued_batches`` batches wait per queue; a request that would need another is
  answered UNAVAILABLE / 503 at once ("the batch scheduling queue ... is full");
- requests whose inputs differ beyond the batch dimension are merged only with
  ``pad_variable_length_inputs``, padding each input up to the largest size of every dimension
  with its own first element (TF Serving's batching_util rule); otherwise they queue apart;
- an output that does not lead with the merged batch size cannot be split: the batch fails.

The parameters come from TF Serving's ``BatchingParameters`` text format. The
tensorflow-serving-api package does not ship ``session_bundle_config_pb2``, so the message is
declared here with TF Serving's own field names, numbers and types (wrappers included) and parsed
by protobuf's own text-format parser: a file TF Serving takes parses the same way here.
"""

import dataclasses
import os
import threading
import time

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

from graphopt.serve.config_files import ConfigFileError, parse_text_file
from graphopt.serve.errors import BadRequest, ModelFailed, RequestError, ServerBusy


def _batching_parameters_class():
    """The BatchingParameters message class of tensorflow_serving/servables/tensorflow/
    session_bundle_config.proto (package tensorflow.serving)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="graphopt/tensorflow_serving_batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    label, optional, repeated = descriptor_pb2.FieldDescriptorProto, 1, 3
    for name, number, kind, type_name, lab in (
        ("max_batch_size", 1, label.TYPE_MESSAGE, ".google.protobuf.Int64Value", optional),
        ("batch_timeout_micros", 2, label.TYPE_MESSAGE, ".google.protobuf.Int64Value", optional),
        ("max_enqueued_batches", 3, label.TYPE_MESSAGE, ".google.protobuf.Int64Value", optional),
        ("num_batch_threads", 4, label.TYPE_MESSAGE, ".google.protobuf.Int64Value", optional),
        ("thread_pool_name", 5, label.TYPE_MESSAGE, ".google.protobuf.StringValue", optional),
        ("allowed_batch_sizes", 6, label.TYPE_INT64, "", repeated),
        ("pad_variable_length_inputs", 7, label.TYPE_BOOL, "", optional),
        ("enable_large_batch_splitting", 8, label.TYPE_MESSAGE, ".google.protobuf.BoolValue", optional),
        ("max_execution_batch_size", 9, label.TYPE_MESSAGE, ".google.protobuf.Int64Value", optional),
    ):
        field = message.field.add(name=name, number=number, type=kind, label=lab)
        if type_name:
            field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(file.SerializeToString())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


BatchingParametersProto = _batching_parameters_class()


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's batching parameters with its defaults (SharedBatchScheduler, BatchingSession)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 2
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: max_batch_size

    @property
    def execution_batch_size(self):
        """The most rows one run takes: max_execution_batch_size when splitting, else max_batch_size."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    def padded_size(self, rows):
        """The batch size a batch of ``rows`` rows runs at: the next allowed size (or rows itself)."""
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows


def default_num_batch_threads():
    """TF Serving's default, port::MaxParallelism(): the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_batching_parameters():
    """TF Serving's defaults for --enable-batching without a parameters file."""
    return BatchingParameters(num_batch_threads=default_num_batch_threads())


def read_batching_parameters(path, flag="--batching-parameters-file"):
    """BatchingParameters from a text-format file; ConfigFileError names the file, field and fix."""
    proto = parse_text_file(path, flag, BatchingParametersProto(), "max_batch_size { value: 32 }")
    return batching_parameters_from_proto(proto, f"{flag} {path}")


def batching_parameters_from_proto(proto, where):
    """Checked BatchingParameters of a parsed proto; ``where`` prefixes every complaint."""

    def wrapped(name, default):
        return getattr(proto, name).value if proto.HasField(name) else default

    params = BatchingParameters(
        max_batch_size=wrapped("max_batch_size", 1000),
        batch_timeout_micros=wrapped("batch_timeout_micros", 0),
        max_enqueued_batches=wrapped("max_enqueued_batches", 10),
        num_batch_threads=wrapped("num_batch_threads", default_num_batch_threads()),
        thread_pool_name=wrapped("thread_pool_name", "batch_threads"),
        allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
        pad_variable_length_inputs=proto.pad_variable_length_inputs,
        enable_large_batch_splitting=wrapped("enable_large_batch_splitting", False),
        max_execution_batch_size=wrapped("max_execution_batch_size", 0),
    )

    def refuse(field, problem, fix):
        raise ConfigFileError(f"{where}: field {field}: {problem}; {fix}")

    for field in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if getattr(params, field) < 1:
            refuse(field, f"{getattr(params, field)} is not a positive number", "set it to 1 or more")
    if params.batch_timeout_micros < 0:
        refuse("batch_timeout_micros", f"{params.batch_timeout_micros} is negative", "set it to 0 or more")
    if params.num_batch_threads > 1024:
        refuse("num_batch_threads", f"{params.num_batch_threads} threads is too many", "use at most 1024")
    if params.max_execution_batch_size < 0:
        refuse("max_execution_batch_size", "it is negative", "set it to 1 or more")
    if params.enable_large_batch_splitting and params.execution_batch_size > params.max_batch_size:
        refuse(
            "max_execution_batch_size",
            f"{params.execution_batch_size} exceeds max_batch_size {params.max_batch_size}",
            "make it at most max_batch_size",
        )
    sizes = params.allowed_batch_sizes
    if sizes:
        if any(s < 1 for s in sizes) or list(sizes) != sorted(set(sizes)):
            refuse(
                "allowed_batch_sizes", f"{list(sizes)} is not strictly increasing positive sizes", "sort them"
            )
        if sizes[-1] != params.execution_batch_size:
            which = (
                "max_execution_batch_size"
                if params.execution_batch_size != params.max_batch_size
                else "max_batch_size"
            )
            refuse(
                "allowed_batch_sizes",
                f"its last entry {sizes[-1]} is not {which} ({params.execution_batch_size})",
                f"end the list with {params.execution_batch_size}",
            )
    return params


# ---- the scheduler ------------------------------------------------------------------------------


class _Task:
    """One request's share of a batch: its arrays, the rows it brings, and its answer once run."""

    __slots__ = ("arrays", "rows", "enqueued", "done", "outputs", "error")

    def __init__(self, arrays, rows):
        self.arrays, self.rows = arrays, rows
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.outputs = None
        self.error = None


class _Batch:
    __slots__ = ("tasks", "rows", "opened")

    def __init__(self):
        self.tasks, self.rows, self.opened = [], 0, time.monotonic()


class _Queue:
    """The batches waiting for one (model, version, signature[, shapes]); the last one is open."""

    def __init__(self, signature, key):
        self.signature, self.key = signature, key
        self.batches = []


class BatchScheduler:
    """Shared batch threads over one queue per (model, version, signature); see the module doc."""

    def __init__(self, params, metrics=None):
        self.params = params
        self.metrics = metrics
        self._queues = {}
        self._ready = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, name=f"graphopt-{params.thread_pool_name}-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self):
        """Let the batch threads finish the batches they run and end; queued requests fail."""
        with self._ready:
            self._stopping = True
            for queue in self._queues.values():
                for batch in queue.batches:
                    for task in batch.tasks:
                        task.error = ServerBusy("the server is stopping; retry on another replica")
                        task.done.set()
                queue.batches.clear()
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(5.0)

    def run(self, key, signature, arrays):
        """Every output of ``signature`` for checked ``arrays``, computed in a batch with other
        requests of the same ``key``; RequestError as the signature's own call raises, or
        ServerBusy when the queue is full, BadRequest when the request is too large to batch."""
        rows = int(next(iter(arrays.values())).shape[0])
        limit = self.params.max_batch_size
        if rows > limit and not self.params.enable_large_batch_splitting:
            raise BadRequest(
                f"Task size {rows} is larger than maximum input batch size {limit}; "
                f"send at most {limit} examples per request"
            )
        if self.params.pad_variable_length_inputs:  # same ranks merge, padded to a common shape
            key = (key, tuple((name, a.ndim) for name, a in sorted(arrays.items())))
        else:  # only the same shapes beyond the batch dimension merge
            key = (key, tuple((name, a.shape[1:]) for name, a in sorted(arrays.items())))
        step = self.params.execution_batch_size
        pieces = (
            [{name: a[start : start + step] for name, a in arrays.items()} for start in range(0, rows, step)]
            if rows > step
            else [arrays]
        )
        tasks = self._enqueue(key, signature, pieces)
        for task in tasks:
            task.done.wait()
        for task in tasks:
            if task.error is not None:
                raise task.error
        if len(tasks) == 1:
            return tasks[0].outputs
        return {name: np.concatenate([t.outputs[name] for t in tasks]) for name in tasks[0].outputs}

    def _enqueue(self, key, signature, pieces):
        tasks = [_Task(piece, int(next(iter(piece.values())).shape[0])) for piece in pieces]
        with self._ready:
            if self._stopping:
                raise ServerBusy("the server is stopping; retry on another replica")
            queue = self._queues.get(key)
            if queue is None or queue.signature is not signature:
                queue = self._queues[key] = _Queue(signature, key)
            limit = self.params.execution_batch_size
            # all or nothing: a request split in pieces is refused whole when they do not fit
            open_rows = queue.batches[-1].rows if queue.batches else limit
            new_batches = 0
            for task in tasks:
                if open_rows + task.rows > limit:
                    new_batches += 1
                    open_rows = 0
                open_rows += task.rows
            if len(queue.batches) + new_batches > self.params.max_enqueued_batches:
                raise ServerBusy(
                    "the batch scheduling queue to which this request was submitted is full "
                    f"({self.params.max_enqueued_batches} batches wait; max_enqueued_batches); retry later"
                )
            for task in tasks:
                if not queue.batches or queue.batches[-1].rows + task.rows > limit:
                    queue.batches.append(_Batch())
                batch = queue.batches[-1]
                batch.tasks.append(task)
                batch.rows += task.rows
            self._ready.notify()
        return tasks

    def _take(self):
        """The next batch to run (under the lock): the oldest full, closed or timed-out one."""
        timeout = self.params.batch_timeout_micros / 1e6
        limit = self.params.execution_batch_size
        now = time.monotonic()
        best, wait = None, None
        for queue in self._queues.values():
            if not queue.batches:
                continue
            batch = queue.batches[0]
            ready_at = batch.opened + timeout
            if len(queue.batches) > 1 or batch.rows >= limit or now >= ready_at:
                if best is None or batch.opened < best[1].opened:
                    best = (queue, batch)
            else:
                wait = ready_at - now if wait is None else min(wait, ready_at - now)
        if best is None:
            return None, wait
        best[0].batches.pop(0)
        return best, None

    def _run(self):
        while True:
            with self._ready:
                while True:
                    if self._stopping:
                        return
                    taken, wait = self._take()
                    if taken is not None:
                        break
                    self._ready.wait(wait)
            queue, batch = taken
            self._process(queue.signature, batch)

    def _process(self, signature, batch):
        started = time.monotonic()
        try:
            merged, padded = merge(batch.tasks, self.params)
            outputs = signature.compute(merged)
            split(outputs, batch.tasks, padded)
        except RequestError as exc:
            for task in batch.tasks:
                task.error = exc
        except Exception as exc:  # noqa: BLE001 - a bug must fail this batch's requests, never the thread
            for task in batch.tasks:
                task.error = ModelFailed(f"batching failed: {type(exc).__name__}: {exc}")
        if self.metrics is not None:
            self.metrics.batch(batch.rows, padded, [started - t.enqueued for t in batch.tasks])
        for task in batch.tasks:
            task.done.set()


def merge(tasks, params):
    """The tasks' inputs concatenated along the batch dimension (padded beyond it when allowed),
    then padded to the next allowed batch size with copies of the first example: (arrays, size)."""
    rows = sum(task.rows for task in tasks)
    size = params.padded_size(rows)
    merged = {}
    for name in tasks[0].arrays:
        parts = [task.arrays[name] for task in tasks]
        if params.pad_variable_length_inputs:
            parts = _pad_to_common_shape(parts)
        if size > rows:
            parts.append(np.repeat(parts[0][:1], size - rows, axis=0))
        merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return merged, size


def _pad_to_common_shape(parts):
    """Each array padded beyond the batch dimension to the largest size in every dimension, with
    its own first element (TF Serving's batching_util rule)."""
    target = tuple(max(sizes) for sizes in zip(*(p.shape[1:] for p in parts), strict=True))
    padded = []
    for part in parts:
        if part.shape[1:] == target:
            padded.append(part)
            continue
        if part.size == 0:
            raise BadRequest("an input with no elements cannot be padded to merge it into a batch")
        widths = [(0, 0)] + [(0, t - s) for s, t in zip(part.shape[1:], target, strict=True)]
        padded.append(np.pad(part, widths, mode="constant", constant_values=part.reshape(-1)[0]))
    return padded


def split(outputs, tasks, size):
    """Give each task its rows of every output; ModelFailed when an output has no batch dimension."""
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != size:
            raise ModelFailed(
                f"output {name!r} has shape {list(value.shape)}, which does not lead with the batch "
                f"size {size}: its requests cannot be batched; serve this model without --enable-batching"
            )
    start = 0
    for task in tasks:
        task.outputs = {name: value[start : start + task.rows] for name, value in outputs.items()}
        start += task.rows
