"""Build graphopt: the Python package plus the EmbeddingVariable kernel library.

The kernels are compiled against the TensorFlow installed in the build environment
(flags from ``tf.sysconfig``); the TensorFlow version is recorded beside the library so
that ``import graphopt`` can refuse a mismatched TensorFlow with a clear message.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
LIB_NAME = "graphopt._graphopt_ops"


def _cpu_sources():
    sources = glob.glob(os.path.join("custom_ops", "**", "*.cc"), recursive=True)
    return sorted(s for s in sources if not s.endswith(".cu.cc") and "_test" not in s)


class TensorFlowBuildExt(build_ext):
    """Compiles the op library with TensorFlow's own compile and link flags."""

    user_options = build_ext.user_options + [("sanitize=", None, "e.g. address")]

    def initialize_options(self):
        super().initialize_options()
        self.sanitize = os.environ.get("GRAPHOPT_SANITIZE", "")

    def get_ext_filename(self, ext_name):
        # A TensorFlow op library, not a CPython module: no ABI-tagged suffix, so
        # graphopt/ops/library.py finds graphopt/_graphopt_ops.so.
        return os.path.join(*ext_name.split(".")) + ".so"

    def build_extension(self, ext):
        import tensorflow as tf  # a build requirement (pyproject.toml)

        out_path = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        cflags = list(tf.sysconfig.get_compile_flags())
        lflags = list(tf.sysconfig.get_link_flags())
        # -fno-math-errno: sqrt needs no errno branch, so the optimizer row loops vectorise
        # (sqrtps/divps round exactly like their scalar forms: results are unchanged).
        opt = ["-O3", "-march=x86-64-v2", "-DNDEBUG", "-fno-math-errno"]
        if self.sanitize:
            opt = ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={self.sanitize}"]
            lflags.append(f"-fsanitize={self.sanitize}")
        cmd = (
            [
                os.environ.get("CXX", "g++"),
                "-std=c++17",
                "-shared",
                "-fPIC",
                "-Wall",
                "-Wno-sign-compare",
                "-Icustom_ops",
                # TensorFlow's own headers trip these by the hundred.
                "-Wno-deprecated-declarations",
                "-Wno-interference-size",
            ]
            + opt
            + cflags
            + list(ext.sources)
            + ["-o", out_path]
            + lflags
        )
        print(" ".join(cmd))
        subprocess.check_call(cmd, cwd=HERE)
        info = {
            "tensorflow_version": tf.__version__,
            "tensorflow_git_version": tf.version.GIT_VERSION,
            "cxx11_abi": tf.sysconfig.CXX11_ABI_FLAG,
            "sanitize": self.sanitize,
            "python": sys.version.split()[0],
        }
        info["gpu_library"] = (
            "off (sanitizer build)"
            if self.sanitize
            else _build_gpu_library(os.path.dirname(out_path), cflags, lflags, self.build_temp)
        )
        with open(os.path.join(os.path.dirname(out_path), "_build_info.json"), "w") as f:
            json.dump(info, f, indent=2)

    def copy_extensions_to_source(self):
        # An in-place (editable) build copies only the library into the source
        # tree; the build info (and the GPU library, when built) must sit beside it there.
        super().copy_extensions_to_source()
        for ext in self.extensions:
            built = os.path.join(self.build_lib, *ext.name.split(".")[:-1])
            package_dir = os.path.join(HERE, *ext.name.split(".")[:-1])
            shutil.copyfile(
                os.path.join(built, "_build_info.json"), os.path.join(package_dir, "_build_info.json")
            )
            gpu_built = os.path.join(built, GPU_LIB_FILE)
            gpu_dest = os.path.join(package_dir, GPU_LIB_FILE)
            if os.path.exists(gpu_built):
                shutil.copyfile(gpu_built, gpu_dest)
            elif os.path.exists(gpu_dest):
                os.remove(gpu_dest)  # a stale GPU library must not outlive its CPU library


# --- The optional GPU library (docs/cuda.md) -------------------------------------------------
GPU_LIB_FILE = "_graphopt_ops_gpu.so"
CUDA_DIR = os.path.join("custom_ops", "embedding_variable", "cuda")


def _cuda_toolchain():
    """(nvcc, libcudart_static.a, TensorFlow's CUDA include dir), or None with the reason."""
    import tensorflow as tf

    nvcc = os.environ.get("NVCC") or shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not os.path.exists(nvcc):
        return None, "no nvcc"
    include = os.path.join(tf.sysconfig.get_include(), "third_party", "gpus", "cuda", "include")
    if not os.path.exists(os.path.join(include, "cuda_runtime.h")):
        return None, "TensorFlow ships no CUDA headers"
    roots = [
        os.environ.get("CUDA_HOME", ""),
        "/usr/local/cuda",
        os.path.dirname(os.path.dirname(os.path.realpath(nvcc))),
    ]
    cudart = next(
        (
            os.path.join(r, lib, "libcudart_static.a")
            for r in roots
            if r
            for lib in ("lib64", "lib")
            if os.path.exists(os.path.join(r, lib, "libcudart_static.a"))
        ),
        None,
    )
    if cudart is None:
        return None, "no libcudart_static.a beside nvcc"
    return (nvcc, cudart, include), None


def _build_gpu_library(lib_dir, cflags, lflags, build_temp):
    """Builds graphopt/_graphopt_ops_gpu.so: the CUDA table (nvcc) plus the GPU kernel
    registrations (host compiler, TensorFlow's flags). Never fails the build: without a CUDA
    toolchain, or when the compile fails, one line says so and graphopt stays CPU-only."""
    out = os.path.join(lib_dir, GPU_LIB_FILE)
    if os.path.exists(out):
        os.remove(out)
    if os.environ.get("GRAPHOPT_GPU", "auto") == "0":
        return "off (GRAPHOPT_GPU=0)"
    toolchain, why = _cuda_toolchain()
    if toolchain is None:
        print(f"graphopt: CPU-only build ({why}); the GPU kernels need nvcc and TensorFlow's CUDA headers")
        return f"not built: {why}"
    nvcc, cudart, cuda_include = toolchain
    tmp = os.path.join(build_temp, "gpu")
    os.makedirs(tmp, exist_ok=True)
    abi = [f for f in cflags if f.startswith("-D_GLIBCXX_USE_CXX11_ABI")]
    # --fmad=false: rows bit-identical to the CPU table's (docs/cuda.md, Numerics). SASS for
    # sm_90, PTX for compute_80 (the driver compiles it for other GPUs at load).
    table = [
        nvcc,
        "-std=c++17",
        "-O3",
        "--fmad=false",
        "-Xcompiler",
        "-fPIC",
        *(x for f in abi for x in ("-Xcompiler", f)),
        "-Icustom_ops",
        "-gencode",
        "arch=compute_90,code=sm_90",
        "-gencode",
        "arch=compute_80,code=compute_80",
        "-c",
        os.path.join(CUDA_DIR, "ev_gpu_table.cu"),
        "-o",
        os.path.join(tmp, "table.o"),
    ]
    kernels = [
        os.environ.get("CXX", "g++"),
        "-std=c++17",
        "-fPIC",
        "-O2",
        "-DNDEBUG",
        "-Icustom_ops",
        f"-I{cuda_include}",
        "-Wno-deprecated-declarations",
        *cflags,
        "-x",
        "c++",
        "-c",
        os.path.join(CUDA_DIR, "ev_gpu_kernels.cu.cc"),
        "-o",
        os.path.join(tmp, "kernels.o"),
    ]
    # cudart linked statically with its symbols kept local, so it cannot interpose the CUDA
    # runtime TensorFlow itself loads.
    link = [
        os.environ.get("CXX", "g++"),
        "-shared",
        os.path.join(tmp, "kernels.o"),
        os.path.join(tmp, "table.o"),
        cudart,
        "-Wl,--exclude-libs,ALL",
        "-o",
        out,
        *lflags,
        "-ldl",
        "-lrt",
        "-lpthread",
    ]
    try:
        procs = [
            subprocess.Popen(c, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for c in (table, kernels)
        ]
        logs = [p.communicate()[0] for p in procs]
        failed = [
            (c, log, p.returncode)
            for c, log, p in zip((table, kernels), logs, procs, strict=False)
            if p.returncode != 0
        ]
        if not failed:
            r = subprocess.run(link, cwd=HERE, capture_output=True, text=True)
            if r.returncode != 0:
                failed = [(link, r.stdout + r.stderr, r.returncode)]
    except OSError as e:
        failed = [([str(e)], "", -1)]
    if failed:
        cmd, log, rc = failed[0]
        last = (log.strip().splitlines() or [f"exit status {rc}"])[-1][:200]
        print(
            f"graphopt: CPU-only build (the GPU library did not compile: {os.path.basename(cmd[0])}: {last})"
        )
        return "not built: compile failed"
    print(f"graphopt: built the GPU kernels ({GPU_LIB_FILE})")
    return "built"


def _version():
    namespace: dict = {}
    with open(os.path.join(HERE, "graphopt", "version.py")) as f:
        exec(f.read(), namespace)
    return namespace["__version__"]


sources = _cpu_sources()
ext_modules = [Extension(LIB_NAME, sources=sources)] if sources else []

setup(
    name="graphopt",
    version=_version(),
    description="Rewrite trained TensorFlow recommendation models onto dynamic-hash EmbeddingVariables",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # Every package under graphopt/ (a new target's passes/ folder needs no edit here).
    packages=find_packages(include=["graphopt", "graphopt.*"]),
    package_data={"graphopt": ["_build_info.json", GPU_LIB_FILE]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": TensorFlowBuildExt},
    install_requires=[
        "tensorflow==2.21.0",
        "tf-keras==2.21.0",
        "tensorflow-serving-api==2.21.0",
        "grpcio>=1.60",
        "protobuf",
        "numpy",
        "click>=8.1",
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3", "ruff==0.17.6", "mypy==2.4.1"]},
    entry_points={"console_scripts": ["graphopt=graphopt.cli:main"]},
    zip_safe=False,
)
