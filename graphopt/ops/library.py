"""Loads the compiled EmbeddingVariable op library once, refusing one built for another TensorFlow."""

import functools
import json
import os

import tensorflow as tf

from graphopt.errors import OpLibraryError

# Points at another build of the library (e.g. the AddressSanitizer one of `make asan`);
# its _build_info.json must sit beside it.
LIBRARY_ENV = "GRAPHOPT_OP_LIBRARY"
_REBUILD = "rebuild it with `make install` (or `pip install --no-build-isolation -e .`)"


def library_path() -> str:
    """Where the op library is looked for."""
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_graphopt_ops.so")
    return os.environ.get(LIBRARY_ENV) or default


def _build_info(path: str) -> dict:
    info_path = os.path.join(os.path.dirname(path), "_build_info.json")
    try:
        with open(info_path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise OpLibraryError(
            f"{info_path} is missing, so the TensorFlow that {path} was built for is unknown; {_REBUILD}"
        ) from None
    except json.JSONDecodeError as e:
        raise OpLibraryError(f"{info_path} is not valid JSON ({e}); {_REBUILD}") from None


def _asan_runtime_loaded() -> bool:
    with open("/proc/self/maps") as f:
        return "libasan" in f.read()


@functools.cache
def load_library():
    """Loads the op library (once per process) and returns its op-wrapper module."""
    path = library_path()
    if not os.path.exists(path):
        raise OpLibraryError(f"the graphopt op library {path} is missing; {_REBUILD}")
    info = _build_info(path)
    built_for = info.get("tensorflow_version", "an unknown version")
    if built_for != tf.__version__:
        raise OpLibraryError(
            f"the graphopt op library {path} was built for TensorFlow {built_for} but "
            f"TensorFlow {tf.__version__} is installed; {_REBUILD}"
        )
    sanitizer = info.get("sanitize") or ""
    if sanitizer == "address" and not _asan_runtime_loaded():
        # Loading it anyway would abort the whole process from inside the ASan runtime.
        raise OpLibraryError(
            f"{path} was built with -fsanitize=address; run with "
            "LD_PRELOAD=$(g++ -print-file-name=libasan.so) (see `make asan`), or "
            f"{_REBUILD}"
        )
    try:
        module = tf.load_op_library(path)
    except tf.errors.NotFoundError as e:
        raise OpLibraryError(
            f"cannot load {path} (built for TensorFlow {built_for}): {e.message.strip()}; {_REBUILD}"
        ) from None
    _load_gpu_kernels(os.path.join(os.path.dirname(path), GPU_LIBRARY_FILE))
    return module


# The GPU kernels (docs/cuda.md): built beside the op library when nvcc was there, loaded
# only where TensorFlow sees a GPU, so nothing changes on a CPU machine. GRAPHOPT_GPU=0 keeps
# a GPU machine on the CPU kernels.
GPU_LIBRARY_FILE = "_graphopt_ops_gpu.so"


def _load_gpu_kernels(path: str) -> None:
    if (
        os.environ.get("GRAPHOPT_GPU") == "0"
        or not os.path.exists(path)
        or not tf.config.list_physical_devices("GPU")
    ):
        return
    try:
        tf.load_op_library(path)
    except tf.errors.NotFoundError as e:
        raise OpLibraryError(
            f"cannot load the GPU kernels {path}: {e.message.strip()}; "
            f"{_REBUILD}, or set GRAPHOPT_GPU=0 to run on the CPU"
        ) from None
