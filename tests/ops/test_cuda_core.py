"""The CUDA table core without a GPU: it compiles for sm_90, the TensorFlow GPU kernels compile
against the device seam and are built by setup.py, and the code it shares with the
host (key hashing, bucket probing, initializer rows, optimizer formulas, the reference
table the GPU check compares against) agrees with the CPU EmbeddingVariable and with
TensorFlow's own sparse-apply kernels. The GPU itself is exercised by `make gpu-check`."""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from graphopt.ops import EmbeddingVariable
from tests.ops.conftest import EXTREME_KEYS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUDA_DIR = os.path.join(REPO, "custom_ops", "embedding_variable", "cuda")
NVCC = shutil.which("nvcc") or (
    "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
)
FLAGS = ["-std=c++17", "--fmad=false", "-I" + os.path.join(REPO, "custom_ops")]
OPTIMIZERS = {"sgd": 1, "adagrad": 2, "adam": 3, "ftrl": 4}
INITIALIZERS = {"zeros": 0, "constant": 1, "uniform": 2, "normal": 3, "truncated_normal": 4}
# TensorFlow's CUDA headers, which the GPU kernels (ev_gpu_kernels.cu.cc) compile against.
TF_CUDA_INCLUDE = os.path.join(tf.sysconfig.get_include(), "third_party", "gpus", "cuda", "include")


@pytest.fixture(scope="session")
def cuda_build(tmp_path_factory):
    """Compiles, in parallel: the table core for sm_90 (device code, ptxas included), the
    GPU check program linked against it, the host tool, and the TensorFlow GPU kernels
    (host compiler, TensorFlow's flags, as setup.py does). One compile per session."""
    if NVCC is None:
        pytest.skip("nvcc not found: the CUDA core is not compiled on this machine")
    out = tmp_path_factory.mktemp("cuda")
    src = lambda name: os.path.join(CUDA_DIR, name)  # noqa: E731
    commands = {
        "table": [
            NVCC,
            *FLAGS,
            "-O3",
            "-arch=sm_90",
            "-c",
            src("ev_gpu_table.cu"),
            "-o",
            str(out / "ev_gpu_table.o"),
        ],
        "check": [
            NVCC,
            *FLAGS,
            "-O1",
            "-arch=sm_90",
            "-c",
            src("ev_gpu_check.cu"),
            "-o",
            str(out / "ev_gpu_check.o"),
        ],
        "tool": [NVCC, *FLAGS, "-O2", src("ev_host_tool.cu"), "-o", str(out / "ev_host_tool")],
    }
    if os.path.exists(os.path.join(TF_CUDA_INCLUDE, "cuda_runtime.h")):
        # -O0: every kernel template is still instantiated against the seam, just faster.
        commands["kernels"] = [
            os.environ.get("CXX", "g++"),
            "-std=c++17",
            "-fPIC",
            "-O0",
            "-I" + os.path.join(REPO, "custom_ops"),
            "-I" + TF_CUDA_INCLUDE,
            "-Wno-deprecated-declarations",
            *tf.sysconfig.get_compile_flags(),
            "-x",
            "c++",
            "-c",
            src("ev_gpu_kernels.cu.cc"),
            "-o",
            str(out / "ev_gpu_kernels.o"),
        ]

    def run(cmd):
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(len(commands)) as pool:
        results = dict(zip(commands, pool.map(run, commands.values()), strict=False))
    if results["table"].returncode == 0 and results["check"].returncode == 0:
        link = run(
            [
                NVCC,
                "-arch=sm_90",
                str(out / "ev_gpu_table.o"),
                str(out / "ev_gpu_check.o"),
                "-o",
                str(out / "ev_gpu_check"),
            ]
        )
        results["link"] = link
    return out, results


def _compiled(cuda_build, name):
    out, results = cuda_build
    r = results[name]
    assert r.returncode == 0, f"{name} failed to compile:\n{r.stderr[-4000:]}"
    return out


def _tool(cuda_build, command, numbers):
    out = _compiled(cuda_build, "tool")
    text = " ".join(n if isinstance(n, str) else repr(n) for n in numbers)
    r = subprocess.run(
        [str(out / "ev_host_tool"), command], input=text, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return [line.split() for line in r.stdout.splitlines()]


def _hex(x):
    return float(np.float32(x)).hex()


def _floats(tokens):
    return np.array([float.fromhex(t) for t in tokens], dtype=np.float32)


def test_table_core_compiles_for_sm90(cuda_build):
    out = _compiled(cuda_build, "table")
    assert os.path.getsize(out / "ev_gpu_table.o") > 0
    # The device code is really there: the sm_90 cubin carries every kernel by name.
    with open(out / "ev_gpu_table.o", "rb") as f:
        blob = f.read()
    for kernel in (b"FindKernel", b"ClaimKernel", b"ApplyKernel", b"RehashKernel", b"ExportWriteKernel"):
        assert kernel in blob, kernel
    assert b"sm_90" in blob


def test_gpu_kernels_compile_against_the_device_seam(cuda_build):
    # The GPU kernels instantiate the kernel templates of embedding_variable_kernels.h with
    # the GPU functors: a change of the seam that they do not follow fails here, not only as
    # a "CPU-only build" line in setup.py's output.
    if "kernels" not in cuda_build[1]:
        pytest.skip(f"TensorFlow ships no CUDA headers ({TF_CUDA_INCLUDE})")
    out, results = cuda_build
    r = results["kernels"]
    errors = [line for line in r.stderr.splitlines() if "error" in line or "candidate" in line]
    assert r.returncode == 0, "ev_gpu_kernels.cu.cc did not compile:\n" + "\n".join(errors[:20])
    assert os.path.getsize(out / "ev_gpu_kernels.o") > 0


def test_gpu_check_links_and_fails_loudly_without_a_gpu(cuda_build):
    out = _compiled(cuda_build, "check")
    _compiled(cuda_build, "link")
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU may be present; `make gpu-check` runs the check itself")
    r = subprocess.run(
        [str(out / "ev_gpu_check"), "--out", str(out / "report.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "no CUDA device" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(out / "report.json")


def _fmix64(key):
    h = key & (2**64 - 1)
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & (2**64 - 1)
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & (2**64 - 1)
    h ^= h >> 33
    return h


def _keys(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([EXTREME_KEYS, rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)])


def test_hash_is_the_cpu_tables(cuda_build):
    keys = _keys(3000)
    hashes = [int(h[0]) for h in _tool(cuda_build, "hash", [len(keys), *map(int, keys)])]
    assert hashes == [_fmix64(int(k)) for k in keys]
    # The CPU table places a key in shard hash >> 58 and exports shard after shard: the
    # host-compiled hash must order its export the same way.
    ev = EmbeddingVariable(1)
    ev.insert(tf.constant(keys), tf.zeros([len(keys), 1]))
    exported = [int(k) for k in ev.export()[0].numpy()]
    shard = {int(k): h >> 58 for k, h in zip(keys, hashes, strict=False)}
    order = [shard[k] for k in exported]
    assert sorted(exported) == sorted(int(k) for k in keys)
    assert order == sorted(order) and len(set(order)) == 64


@pytest.mark.parametrize("num_buckets", [1, 7, 1 << 20, 8 * 1024 * 1024 + 3])
def test_probe_sequence(cuda_build, num_buckets):
    keys = _keys(200, seed=num_buckets)
    attempts = min(num_buckets, 9)
    rows = _tool(cuda_build, "probe", [num_buckets, attempts, len(keys), *map(int, keys)])
    homes = []
    for key, row in zip(keys, rows, strict=False):
        home = (_fmix64(int(key)) * num_buckets) >> 64
        homes.append(home)
        assert [int(b) for b in row] == [(home + a) % num_buckets for a in range(attempts)]
    if num_buckets == 7:  # the sequence visits every bucket before repeating
        assert all(sorted(map(int, row)) == list(range(7)) for row in rows)
    if num_buckets >= 1 << 20:  # home buckets spread over the whole index
        assert max(homes) > 0.9 * num_buckets and min(homes) < 0.1 * num_buckets


@pytest.mark.parametrize(
    "name,initializer,seed",
    [
        ("uniform", tf.keras.initializers.RandomUniform(-0.3, 0.7), 11),
        ("uniform", None, 0),
        ("normal", tf.keras.initializers.RandomNormal(0.2, 1.5), 5),
        ("truncated_normal", tf.keras.initializers.TruncatedNormal(0.0, 0.05), 123456789),
        ("constant", tf.keras.initializers.Constant(0.375), 3),
        ("zeros", "zeros", 0),
    ],
)
def test_initializer_rows_are_the_cpu_tables(cuda_build, name, initializer, seed):
    dim = 13
    keys = _keys(500, seed=seed)
    ev = EmbeddingVariable(dim, initializer=initializer, seed=seed)
    cpu = ev.lookup(tf.constant(keys), insert_missing=True).numpy()
    attrs = ev._attrs
    args = [
        INITIALIZERS[name],
        attrs["seed"],
        dim,
        _hex(attrs.get("init_value", 0.0)),
        _hex(attrs.get("init_minval", -0.05)),
        _hex(attrs.get("init_maxval", 0.05)),
        _hex(attrs.get("init_mean", 0.0)),
        _hex(attrs.get("init_stddev", 1.0)),
        len(keys),
        *map(int, keys),
    ]
    host = np.stack([_floats(r) for r in _tool(cuda_build, "rows", args)])
    np.testing.assert_array_equal(host.view(np.uint32), cpu.view(np.uint32))
    # and the check can fail: another seed gives other rows (constant rows do not depend on it)
    if name not in ("constant", "zeros"):
        args[1] = attrs["seed"] + 1
        other = np.stack([_floats(r) for r in _tool(cuda_build, "rows", args)])
        assert (other != cpu).mean() > 0.9


# ---- optimizer formulas: the reference table's apply against TensorFlow's kernels ----------

V, DIM = 7, 5
HYPER = dict(lr=0.05, epsilon=1e-7, beta1=0.9, beta2=0.999, l1=0.01, l2=0.02, lr_power=-0.5)


def _batches(seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        ids = rng.integers(0, V, 9)  # repeats: summed per key before the update
        grads = rng.normal(0, 1, (len(ids), DIM)).astype(np.float32)
        out.append((ids, grads))
    return out


def _initial(optimizer, seed):
    rng = np.random.default_rng(seed + 100)
    var = rng.normal(0, 0.5, (V, DIM)).astype(np.float32)
    slots = {
        "sgd": [],
        "adagrad": [rng.uniform(0.05, 1, (V, DIM))],
        "adam": [rng.normal(0, 0.1, (V, DIM)), rng.uniform(0.0, 0.1, (V, DIM))],
        "ftrl": [rng.uniform(0.1, 1, (V, DIM)), rng.normal(0, 0.5, (V, DIM))],
    }[optimizer]
    return var, [s.astype(np.float32) for s in slots]


def _powers(t):
    """beta1^t, beta2^t as float32: what a caller feeds ApplyAdam and the table's apply."""
    return (np.float32(HYPER["beta1"]) ** np.float32(t), np.float32(HYPER["beta2"]) ** np.float32(t))


def _reference(cuda_build, optimizer, l2_shrinkage, seed):
    var, slots = _initial(optimizer, seed)
    batches = _batches(seed)
    entries = np.concatenate([var, *slots], axis=1)
    out = []
    for t, (ids, grads) in enumerate(batches, start=1):
        args = [
            OPTIMIZERS[optimizer],
            DIM,
            *(_hex(HYPER[k]) for k in ("lr", "epsilon", "beta1", "beta2")),
            *map(_hex, _powers(t)),
            _hex(HYPER["l1"]),
            _hex(HYPER["l2"]),
            _hex(l2_shrinkage),
            _hex(HYPER["lr_power"]),
            _hex(0),
            _hex(0),
            V,
        ]
        for key in range(V):
            args += [key, *map(_hex, entries[key])]
        args += [1, len(ids), *map(int, ids), *map(_hex, grads.ravel())]
        rows = _tool(cuda_build, "apply", args)
        assert [int(r[0]) for r in rows] == list(range(V))
        entries = np.stack([_floats(r[1:]) for r in rows])
        out.append(entries.copy())
    return out


def _tensorflow(optimizer, l2_shrinkage, seed):
    var0, slots0 = _initial(optimizer, seed)
    var = tf.Variable(var0)
    slots = [tf.Variable(s) for s in slots0]
    f = lambda x: tf.constant(x, tf.float32)  # noqa: E731
    out = []
    for t, (ids, grads) in enumerate(_batches(seed), start=1):
        # Duplicates summed first, in batch order (what the optimizers do with IndexedSlices)
        unique, index = np.unique(ids, return_inverse=True)
        g = tf.math.unsorted_segment_sum(grads, index, len(unique))
        idx = tf.constant(unique, tf.int64)
        if optimizer == "sgd":
            tf.raw_ops.ResourceScatterSub(resource=var.handle, indices=idx, updates=f(HYPER["lr"]) * g)
        elif optimizer == "adagrad":
            tf.raw_ops.ResourceSparseApplyAdagradV2(
                var=var.handle,
                accum=slots[0].handle,
                lr=f(HYPER["lr"]),
                epsilon=f(HYPER["epsilon"]),
                grad=g,
                indices=idx,
            )
        elif optimizer == "ftrl" and l2_shrinkage:
            tf.raw_ops.ResourceSparseApplyFtrlV2(
                var=var.handle,
                accum=slots[0].handle,
                linear=slots[1].handle,
                grad=g,
                indices=idx,
                lr=f(HYPER["lr"]),
                l1=f(HYPER["l1"]),
                l2=f(HYPER["l2"]),
                l2_shrinkage=f(l2_shrinkage),
                lr_power=f(HYPER["lr_power"]),
            )
        elif optimizer == "ftrl":
            tf.raw_ops.ResourceSparseApplyFtrl(
                var=var.handle,
                accum=slots[0].handle,
                linear=slots[1].handle,
                grad=g,
                indices=idx,
                lr=f(HYPER["lr"]),
                l1=f(HYPER["l1"]),
                l2=f(HYPER["l2"]),
                lr_power=f(HYPER["lr_power"]),
            )
        else:  # lazy Adam: TF's ApplyAdam on the batch's rows only
            rows = [tf.Variable(tf.gather(v, idx)) for v in (var, *slots)]
            b1p, b2p = _powers(t)
            tf.raw_ops.ResourceApplyAdam(
                var=rows[0].handle,
                m=rows[1].handle,
                v=rows[2].handle,
                beta1_power=f(b1p),
                beta2_power=f(b2p),
                lr=f(HYPER["lr"]),
                beta1=f(HYPER["beta1"]),
                beta2=f(HYPER["beta2"]),
                epsilon=f(HYPER["epsilon"]),
                grad=g,
            )
            for target, row in zip((var, *slots), rows, strict=False):
                target.scatter_nd_update(idx[:, None], row)
        out.append(np.concatenate([var.numpy(), *(s.numpy() for s in slots)], axis=1))
    return out


@pytest.mark.parametrize(
    "optimizer,l2_shrinkage", [("sgd", 0.0), ("adagrad", 0.0), ("adam", 0.0), ("ftrl", 0.0), ("ftrl", 0.03)]
)
def test_optimizer_math_matches_tensorflow(cuda_build, optimizer, l2_shrinkage):
    with tf.device("/CPU:0"):
        want = _tensorflow(optimizer, l2_shrinkage, seed=len(optimizer))
    got = _reference(cuda_build, optimizer, l2_shrinkage, seed=len(optimizer))
    for step, (g, w) in enumerate(zip(got, want, strict=False), start=1):
        np.testing.assert_array_equal(
            g.view(np.uint32), w.view(np.uint32), err_msg=f"{optimizer} step {step}"
        )
    # The rows really moved (a no-op apply would pass nothing above against a moving TF).
    assert not np.array_equal(
        got[-1],
        np.concatenate(
            [*(_initial(optimizer, len(optimizer))[:1]), *_initial(optimizer, len(optimizer))[1]], axis=1
        ),
    )


# ---- the TensorFlow GPU kernels (graphopt/_graphopt_ops_gpu.so) ------------------------------

GPU_LIBRARY = os.path.join(REPO, "graphopt", "_graphopt_ops_gpu.so")
# Every EmbeddingVariable op has a GPU kernel (GraphoptEvEvict's refuses: the GPU table does
# not evict yet, docs/cuda.md); an op added without one fails
# test_gpu_kernels_register_once_loaded.
GPU_OPS = [
    "GraphoptEvHandleOp",
    "GraphoptEvFind",
    "GraphoptEvFindOrInsert",
    "GraphoptEvInsert",
    "GraphoptEvRemove",
    "GraphoptEvApplySgd",
    "GraphoptEvApplyAdagrad",
    "GraphoptEvApplyAdam",
    "GraphoptEvApplyFtrl",
    "GraphoptEvExport",
    "GraphoptEvImport",
    "GraphoptEvExportWithSlots",
    "GraphoptEvImportWithSlots",
    "GraphoptEvSize",
    "GraphoptEvMemory",
    "GraphoptEvStats",
    "GraphoptEvEvict",
]
# Ops with CPU kernels only so far (docs/cuda.md, "Not on the GPU yet"): a table that uses them
# is placed on the CPU. Listed here so that a new op must be put in one list or the other.
CPU_ONLY_OPS = [
    "GraphoptEvCollisionlessKey",
    "GraphoptEvFindWithFallback",
    "GraphoptEvFindOrInsertWithFallback",
    "GraphoptEvExportChanged",
    "GraphoptEvApplyDelta",
    "GraphoptEvExportCompressed",
    "GraphoptEvImportCompressed",
]

# Prints, as JSON, the devices each op has kernels for after `import graphopt` (with
# FAKE_GPU set, TensorFlow is told it sees a GPU) and the host-memory args of GPU kernels.
_PROBE = """
import json, os, sys
import tensorflow as tf
if os.environ.get("FAKE_GPU"):
    real = tf.config.list_physical_devices
    tf.config.list_physical_devices = lambda kind=None: (
        [tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")] if kind == "GPU"
        else real(kind))
import graphopt
from graphopt.ops import library
from tensorflow.python.framework import kernels, op_def_registry
# The ops the library defines, from its op wrappers (graphopt_ev_find -> GraphoptEvFind).
names = ("".join(w.capitalize() for w in n.split("_")) for n in dir(library.load_library()))
out = {"ev_ops": sorted(n for n in names
                        if n.startswith("GraphoptEv") and op_def_registry.get(n) is not None)}
for op in sys.argv[1:]:
    defs = kernels.get_registered_kernels_for_op(op).kernel
    out[op] = {"devices": sorted({k.device_type for k in defs}),
               "host": sorted({a for k in defs if k.device_type == "GPU"
                               for a in k.host_memory_arg})}
ev = graphopt.EmbeddingVariable(4, initializer="zeros")  # still a working CPU table
out["lookup"] = ev.lookup(tf.constant([3, 5], tf.int64), insert_missing=True).numpy().tolist()
out["gpu_library_mapped"] = "_graphopt_ops_gpu.so" in open("/proc/self/maps").read()
print(json.dumps(out))
"""


def _probe(fake_gpu, **env):
    environ = {**os.environ, **env}
    if fake_gpu:
        environ["FAKE_GPU"] = "1"
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *GPU_OPS],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gpu_library():
    if NVCC is None:
        pytest.skip("nvcc not found: no GPU library is built on this machine")
    import json

    with open(os.path.join(REPO, "graphopt", "_build_info.json")) as f:
        state = json.load(f).get("gpu_library", "not recorded (built before the GPU library)")
    if state.startswith("off"):  # GRAPHOPT_GPU=0 or a sanitizer build: asked for
        pytest.skip(f"GPU library {state}")
    assert state == "built" and os.path.exists(GPU_LIBRARY), (
        f"nvcc is here but the GPU library was {state!r} (graphopt/_build_info.json); "
        "`python setup.py build_ext --inplace` prints why"
    )
    return GPU_LIBRARY


def test_gpu_library_is_built_where_nvcc_is(gpu_library):
    assert os.path.getsize(gpu_library) > 0


def test_gpu_kernels_register_once_loaded(gpu_library):
    out = _probe(fake_gpu=True)
    assert out["gpu_library_mapped"]
    assert out["ev_ops"] == sorted(GPU_OPS + CPU_ONLY_OPS), "a new op in neither GPU_OPS nor CPU_ONLY_OPS"
    for op in GPU_OPS:
        assert out[op]["devices"] == ["CPU", "GPU"], op
    # scalars read on the host stay there; keys, rows and gradients are device tensors
    assert out["GraphoptEvFindOrInsert"]["host"] == ["step"]
    assert out["GraphoptEvApplyAdam"]["host"] == sorted(
        ["lr", "beta1", "beta2", "epsilon", "beta1_power", "beta2_power"]
    )
    assert out["GraphoptEvFind"]["host"] == []
    assert out["GraphoptEvSize"]["host"] == ["size"]
    assert out["GraphoptEvStats"]["host"] == sorted(["size", "admitted", "evicted", "pending", "bytes_used"])
    assert out["GraphoptEvEvict"]["host"] == sorted(["step", "ttl", "min_freq", "max_rows", "evicted"])
    for op in ("GraphoptEvExportWithSlots", "GraphoptEvImportWithSlots"):
        assert out[op]["host"] == ["pending_counts", "pending_keys"], op
    assert out["lookup"] == [[0.0] * 4] * 2


def test_import_graphopt_without_a_gpu_stays_cpu_only(gpu_library):
    out = _probe(fake_gpu=False)
    assert not out["gpu_library_mapped"]
    assert all(out[op]["devices"] == ["CPU"] for op in GPU_OPS)
    assert out["lookup"] == [[0.0] * 4] * 2
    # and a GPU machine can opt out
    out = _probe(fake_gpu=True, GRAPHOPT_GPU="0")
    assert not out["gpu_library_mapped"]
    assert all(out[op]["devices"] == ["CPU"] for op in GPU_OPS)
