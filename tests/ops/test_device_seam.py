"""The kernels compile for a device other than the CPU from the headers alone.

A stand-in device provides only the functor specialisations of embedding_table_functors.h;
every kernel template is instantiated for it and compiled to an object. A kernel that reached
past the seam would either not compile (the CPU pool helper lives in the CPU .cc file) or
leave a reference to CPU code (a CPUDevice functor, a row-touching EmbeddingTable method)
among the object's undefined symbols, which is what a GPU build adding a .cu.cc would hit.
"""

import os
import re
import shutil
import subprocess

import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SOURCE = r"""
#include "embedding_variable/cc/kernels/embedding_variable_kernels.h"

namespace graphopt {
struct OtherDevice {};

template <typename K> struct FindFunctor<OtherDevice, K> {
  void operator()(OpKernelContext*, const EmbeddingTable&, const K*, int64_t, float*) const {}
};
template <typename K> struct FindOrInsertFunctor<OtherDevice, K> {
  Status operator()(OpKernelContext*, EmbeddingTable*, const K*, int64_t, int64_t,
                    float*) const { return Status(); }
};
template <typename K> struct InsertFunctor<OtherDevice, K> {
  Status operator()(OpKernelContext*, EmbeddingTable*, const K*, int64_t,
                    const float*) const { return Status(); }
};
template <typename K> struct RemoveFunctor<OtherDevice, K> {
  void operator()(OpKernelContext*, EmbeddingTable*, const K*, int64_t) const {}
};
template <> struct ImportFunctor<OtherDevice> {
  Status operator()(OpKernelContext*, EmbeddingTable*, const int64_t*, int64_t, const float*,
                    const int64_t*, const int64_t*, const std::vector<const float*>&,
                    const PendingCounts&) const { return Status(); }
};
template <> struct ExportFunctor<OtherDevice> {
  Status operator()(OpKernelContext*, const EmbeddingTable&,
                    const std::function<Status(int64_t, ExportBuffers*)>&) const {
    return Status();
  }
};
template <typename K> struct SparseApplyFunctor<OtherDevice, K> {
  Status operator()(OpKernelContext*, EmbeddingTable*, const K*, int64_t, const float*,
                    const OptimizerParams&) const { return Status(); }
};
template <> struct EvictFunctor<OtherDevice> {
  Status operator()(OpKernelContext*, EmbeddingTable*, const EvictionRule&,
                    std::vector<int64_t>*) const { return Status(); }
};

template class EvHandleOp<OtherDevice>;
template class EvFindOp<OtherDevice, int64_t>;
template class EvFindOrInsertOp<OtherDevice, int32_t>;
template class EvInsertOp<OtherDevice, int64_t>;
template class EvRemoveOp<OtherDevice, int64_t>;
template class EvExportOp<OtherDevice>;
template class EvImportOp<OtherDevice>;
template class EvApplyKindOp<OtherDevice, int64_t, OptimizerKind::kAdam>;
template class EvEvictOp<OtherDevice>;
template class EvStatsOp<OtherDevice>;
template class EvSizeOp<OtherDevice>;
template class EvMemoryOp<OtherDevice>;
}  // namespace graphopt
"""


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler")
def test_every_kernel_compiles_for_another_device(tmp_path):
    source = tmp_path / "other_device.cc"
    source.write_text(SOURCE)
    obj = tmp_path / "other_device.o"
    cmd = (
        [
            os.environ.get("CXX", "g++"),
            "-std=c++17",
            "-c",
            "-O0",
            "-fPIC",
            "-Wall",
            "-Wno-sign-compare",
            "-Wno-deprecated-declarations",
            f"-I{os.path.join(ROOT, 'custom_ops')}",
        ]
        + tf.sysconfig.get_compile_flags()
        + [str(source), "-o", str(obj)]
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    undefined = subprocess.run(
        ["nm", "-C", "--undefined-only", str(obj)], capture_output=True, text=True, check=True
    ).stdout
    leaks = re.findall(
        r"graphopt::\w+Functor<Eigen::ThreadPoolDevice[^\n]*|"
        r"graphopt::EmbeddingTable::(?:Find|FindOrInsert|Insert|Remove|Import|"
        r"Export|Apply|Evict)\b[^\n]*",
        undefined,
    )
    assert not leaks, leaks
