// CPU kernels of the EmbeddingVariable ops (op definitions: ../ops/).
#include <string>
#include <vector>

#include "embedding_variable/cc/kernels/embedding_lookup_functor.h"
#include "embedding_variable/cc/kernels/embedding_table.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/platform/mutex.h"

namespace graphopt {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::TensorShapeUtils;
namespace errors = tensorflow::errors;

class EvHandleOp : public OpKernel {
 public:
  explicit EvHandleOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("dim", &dim_));
    std::vector<float> default_value;
    OP_REQUIRES_OK(c, c->GetAttr("default_value", &default_value));
    if (default_value.empty()) {
      default_row_.assign(dim_, 0.f);
    } else if (default_value.size() == 1) {
      default_row_.assign(dim_, default_value[0]);
    } else {
      OP_REQUIRES(c, static_cast<int>(default_value.size()) == dim_,
                  errors::InvalidArgument("default_value must hold 0, 1 or dim=", dim_,
                                          " values, got ", default_value.size()));
      default_row_ = default_value;
    }
    std::string kind;
    OP_REQUIRES_OK(c, c->GetAttr("initializer", &kind));
    OP_REQUIRES(c, RowInitializer::ParseKind(kind, &init_.kind),
                errors::InvalidArgument("initializer must be one of uniform, normal, "
                                        "truncated_normal, constant, zeros; got '",
                                        kind, "'"));
    OP_REQUIRES_OK(c, c->GetAttr("init_value", &init_.value));
    OP_REQUIRES_OK(c, c->GetAttr("init_minval", &init_.minval));
    OP_REQUIRES_OK(c, c->GetAttr("init_maxval", &init_.maxval));
    OP_REQUIRES_OK(c, c->GetAttr("init_mean", &init_.mean));
    OP_REQUIRES_OK(c, c->GetAttr("init_stddev", &init_.stddev));
    OP_REQUIRES_OK(c, c->GetAttr("seed", &init_.seed));
    OP_REQUIRES(c, init_.minval <= init_.maxval,
                errors::InvalidArgument("init_minval ", init_.minval,
                                        " must not exceed init_maxval ", init_.maxval));
    OP_REQUIRES(c, init_.stddev >= 0,
                errors::InvalidArgument("init_stddev must be >= 0, got ", init_.stddev));
    std::string shared_name;
    OP_REQUIRES_OK(c, c->GetAttr("shared_name", &shared_name));
    // A prefix match: tf.saved_model.load appends "_load_<n>" to every shared_name of a
    // loaded model, which must not make its anonymous tables one shared table.
    anonymous_ = absl::StartsWith(shared_name, tensorflow::ResourceHandle::ANONYMOUS_NAME);
  }

  void Compute(OpKernelContext* ctx) override {
    tensorflow::mutex_lock lock(mu_);
    if (!cinfo_ready_) {
      // Node-name sharing for an empty shared_name: a TF1 graph's table then
      // outlives one Session.run, as a checkpointed table must.
      OP_REQUIRES_OK(ctx, cinfo_.Init(ctx->resource_manager(), def(), true));
      cinfo_ready_ = true;
    }
    if (anonymous_) {
      // TF's anonymous shared name (what eager objects use): a fresh table per
      // run under a unique name; its owner destroys it with DestroyResourceOp.
      const std::string name = absl::StrCat("_AnonymousEmbeddingVariable",
                                            tensorflow::ResourceHandle::GenerateUniqueId());
      OP_REQUIRES_OK(ctx, cinfo_.resource_manager()->Create<EmbeddingTable>(
                              cinfo_.container(), name,
                              new EmbeddingTable(dim_, default_row_, init_)));
      OP_REQUIRES_OK(ctx, tensorflow::MakeResourceHandleToOutput(
                              ctx, 0, cinfo_.container(), name,
                              tensorflow::TypeIndex::Make<EmbeddingTable>()));
      return;
    }
    EmbeddingTable* table = nullptr;
    OP_REQUIRES_OK(ctx, cinfo_.resource_manager()->LookupOrCreate<EmbeddingTable>(
                            cinfo_.container(), cinfo_.name(), &table,
                            [this](EmbeddingTable** created) {
                              *created = new EmbeddingTable(dim_, default_row_, init_);
                              return Status();
                            }));
    tensorflow::core::ScopedUnref unref(table);
    OP_REQUIRES(ctx, table->dim() == dim_,
                errors::InvalidArgument("EmbeddingVariable '", cinfo_.name(),
                                        "' already exists with dim ", table->dim(),
                                        ", this handle op asks for dim ", dim_));
    OP_REQUIRES_OK(ctx, tensorflow::MakeResourceHandleToOutput(
                            ctx, 0, cinfo_.container(), cinfo_.name(),
                            tensorflow::TypeIndex::Make<EmbeddingTable>()));
  }

 private:
  int dim_ = 0;
  std::vector<float> default_row_;
  RowInitializer init_;
  tensorflow::mutex mu_;
  tensorflow::ContainerInfo cinfo_;
  bool cinfo_ready_ = false;
  bool anonymous_ = false;
};

// Resolves input 0 to the table, checks it against the op's `dim` attr and
// hands it to ComputeWithTable.
class EvTableOp : public OpKernel {
 public:
  explicit EvTableOp(OpKernelConstruction* c) : OpKernel(c) {
    if (HasNodeAttr(c->def(), "dim")) OP_REQUIRES_OK(c, c->GetAttr("dim", &dim_));
  }

  void Compute(OpKernelContext* ctx) override {
    tensorflow::core::RefCountPtr<EmbeddingTable> table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    ComputeWithTable(ctx, table.get());
  }

 protected:
  virtual void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) = 0;

  // keys.shape + [dim]: the shape of the rows of keys.
  TensorShape RowsShape(const Tensor& keys) const {
    TensorShape shape = keys.shape();
    shape.AddDim(dim_);
    return shape;
  }

  Status GetTable(OpKernelContext* ctx, tensorflow::core::RefCountPtr<EmbeddingTable>* table) {
    const Tensor& handle = ctx->input(0);
    if (!TensorShapeUtils::IsScalar(handle.shape())) {
      return errors::InvalidArgument("table must be a scalar resource handle, got shape ",
                                     handle.shape().DebugString());
    }
    TF_RETURN_IF_ERROR(
        tensorflow::LookupResource(ctx, tensorflow::HandleFromInput(ctx, 0), table));
    if (dim_ > 0 && (*table)->dim() != dim_) {
      return errors::InvalidArgument(type_string(), " has dim=", dim_,
                                     " but the EmbeddingVariable has dim ", (*table)->dim());
    }
    return Status();
  }

  int dim_ = 0;
};

template <typename K>
class EvFindOp : public EvTableOp {
 public:
  using EvTableOp::EvTableOp;
  void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) override {
    const Tensor& keys = ctx->input(1);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, RowsShape(keys), &out));
    FindFunctor<CPUDevice, K>()(ctx, *table, keys.flat<K>().data(), keys.NumElements(),
                                out->flat<float>().data());
  }
};

template <typename K>
class EvFindOrInsertOp : public EvTableOp {
 public:
  using EvTableOp::EvTableOp;
  void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) override {
    const Tensor& keys = ctx->input(1);
    const Tensor& step = ctx->input(2);
    OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(step.shape()),
                errors::InvalidArgument("step must be a scalar, got shape ",
                                        step.shape().DebugString()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, RowsShape(keys), &out));
    OP_REQUIRES_OK(ctx, FindOrInsertFunctor<CPUDevice, K>()(
                            ctx, table, keys.flat<K>().data(), keys.NumElements(),
                            step.scalar<int64_t>()(), out->flat<float>().data()));
  }
};

template <typename K>
class EvInsertOp : public EvTableOp {
 public:
  using EvTableOp::EvTableOp;
  void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) override {
    const Tensor& keys = ctx->input(1);
    const Tensor& values = ctx->input(2);
    const TensorShape expected = RowsShape(keys);
    OP_REQUIRES(ctx, values.shape() == expected,
                errors::InvalidArgument("values must have shape keys.shape + [dim] = ",
                                        expected.DebugString(), ", got ",
                                        values.shape().DebugString()));
    OP_REQUIRES_OK(ctx, table->Insert(keys.flat<K>().data(), keys.NumElements(),
                                      values.flat<float>().data(), CpuPool(ctx)));
  }
};

template <typename K>
class EvRemoveOp : public EvTableOp {
 public:
  using EvTableOp::EvTableOp;
  void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) override {
    const Tensor& keys = ctx->input(1);
    table->Remove(keys.flat<K>().data(), keys.NumElements(), CpuPool(ctx));
  }
};

class EvExportOp : public EvTableOp {
 public:
  using EvTableOp::EvTableOp;
  void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) override {
    const int dim = dim_;
    OP_REQUIRES_OK(ctx, table->Export(
                            [ctx, dim](int64_t n, ExportBuffers* out) -> Status {
                              Tensor *keys, *values, *freqs, *versions;
                              TF_RETURN_IF_ERROR(ctx->allocate_output(0, {n}, &keys));
                              TF_RETURN_IF_ERROR(ctx->allocate_output(1, {n, dim}, &values));
                              TF_RETURN_IF_ERROR(ctx->allocate_output(2, {n}, &freqs));
                              TF_RETURN_IF_ERROR(ctx->allocate_output(3, {n}, &versions));
                              out->keys = keys->flat<int64_t>().data();
                              out->values = values->flat<float>().data();
                              out->freqs = freqs->flat<int64_t>().data();
                              out->versions = versions->flat<int64_t>().data();
                              return Status();
                            }));
  }
};

class EvImportOp : public EvTableOp {
 public:
  using EvTableOp::EvTableOp;
  void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) override {
    const Tensor& keys = ctx->input(1);
    const Tensor& values = ctx->input(2);
    const Tensor& freqs = ctx->input(3);
    const Tensor& versions = ctx->input(4);
    OP_REQUIRES(ctx, TensorShapeUtils::IsVector(keys.shape()),
                errors::InvalidArgument("keys must be 1-D, got shape ",
                                        keys.shape().DebugString()));
    const int64_t n = keys.dim_size(0);
    OP_REQUIRES(ctx, values.shape() == TensorShape({n, dim_}),
                errors::InvalidArgument("values must have shape [", n, ", ", dim_,
                                        "] to match ", n, " keys, got ",
                                        values.shape().DebugString()));
    OP_REQUIRES(ctx, freqs.shape() == TensorShape({n}),
                errors::InvalidArgument("freqs must have shape [", n, "], got ",
                                        freqs.shape().DebugString()));
    OP_REQUIRES(ctx, versions.shape() == TensorShape({n}),
                errors::InvalidArgument("versions must have shape [", n, "], got ",
                                        versions.shape().DebugString()));
    OP_REQUIRES_OK(ctx, table->Import(keys.flat<int64_t>().data(), n,
                                      values.flat<float>().data(),
                                      freqs.flat<int64_t>().data(),
                                      versions.flat<int64_t>().data(), CpuPool(ctx)));
  }
};

class EvSizeOp : public EvTableOp {
 public:
  using EvTableOp::EvTableOp;
  void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {}, &out));
    out->scalar<int64_t>()() = table->Size();
  }
};

class EvMemoryOp : public EvTableOp {
 public:
  using EvTableOp::EvTableOp;
  void ComputeWithTable(OpKernelContext* ctx, EmbeddingTable* table) override {
    Tensor *bytes = nullptr, *capacity = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {}, &bytes));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, {}, &capacity));
    bytes->scalar<int64_t>()() = table->BytesUsed();
    capacity->scalar<int64_t>()() = table->Capacity();
  }
};

#define REGISTER(NAME, OP) \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE_CPU), OP)
#define REGISTER_KEYED(NAME, OP)                                                         \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name(NAME).Device(DEVICE_CPU).TypeConstraint<int32_t>("Tkeys"),        \
      OP<int32_t>);                                                                      \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name(NAME).Device(DEVICE_CPU).TypeConstraint<int64_t>("Tkeys"),        \
      OP<int64_t>)

REGISTER("GraphoptEvHandleOp", EvHandleOp);
REGISTER_KEYED("GraphoptEvFind", EvFindOp);
REGISTER_KEYED("GraphoptEvFindOrInsert", EvFindOrInsertOp);
REGISTER_KEYED("GraphoptEvInsert", EvInsertOp);
REGISTER_KEYED("GraphoptEvRemove", EvRemoveOp);
REGISTER("GraphoptEvExport", EvExportOp);
REGISTER("GraphoptEvImport", EvImportOp);
REGISTER("GraphoptEvSize", EvSizeOp);
REGISTER("GraphoptEvMemory", EvMemoryOp);

#undef REGISTER_KEYED
#undef REGISTER

}  // namespace graphopt
