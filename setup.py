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

from setuptools import Extension, setup
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
            [os.environ.get("CXX", "g++"), "-std=c++17", "-shared", "-fPIC", "-Wall",
             "-Wno-sign-compare", "-Icustom_ops",
             # TensorFlow's own headers trip these by the hundred.
             "-Wno-deprecated-declarations", "-Wno-interference-size"]
            + opt + cflags + list(ext.sources) + ["-o", out_path] + lflags
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
        with open(os.path.join(os.path.dirname(out_path), "_build_info.json"), "w") as f:
            json.dump(info, f, indent=2)

    def copy_extensions_to_source(self):
        # An in-place (editable) build copies only the library into the source
        # tree; the build info must sit beside it there as well.
        super().copy_extensions_to_source()
        for ext in self.extensions:
            built = os.path.join(self.build_lib, *ext.name.split(".")[:-1])
            package_dir = os.path.join(HERE, *ext.name.split(".")[:-1])
            shutil.copyfile(os.path.join(built, "_build_info.json"),
                            os.path.join(package_dir, "_build_info.json"))


sources = _cpu_sources()
ext_modules = [Extension(LIB_NAME, sources=sources)] if sources else []

setup(
    name="graphopt",
    version="0.1.0",
    description="Rewrite trained TensorFlow recommendation models onto dynamic-hash EmbeddingVariables",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["graphopt", "graphopt.cli", "graphopt.data", "graphopt_models"]
    + [p for p in ["graphopt.ops", "graphopt.graph", "graphopt.rewrite", "graphopt.rewrite.passes",
                   "graphopt.validate", "graphopt.serve"]
       if os.path.isdir(os.path.join(HERE, *p.split(".")))],
    package_dir={"graphopt_models": "models"},
    package_data={"graphopt": ["_build_info.json"]},
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
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3"]},
    entry_points={"console_scripts": ["graphopt=graphopt.cli:main"]},
    zip_safe=False,
)
