// Op kernels of the EmbeddingVariable ops (op definitions: ../ops/), templated on
// the Device. They validate inputs and call the functors of
// embedding_table_functors.h for everything that touches rows; the CPU
// specialisations and registrations are in embedding_variable_kernels.cc.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_VARIABLE_KERNELS_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_VARIABLE_KERNELS_H_

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "embedding_variable/cc/kernels/embedding_table.h"
#include "embedding_variable/cc/kernels/embedding_table_functors.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/platform/mutex.h"

namespace graphopt {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::TensorShapeUtils;
namespace errors = tensorflow::errors;

// The handle op's optimizer / admission / cap attrs.
inline Status ParseTableOptions(OpKernelConstruction* c, TableOptions* options) {
  std::string optimizer, policy, admission;
  std::vector<float> slot_init;
  int64_t bloom_hashes;
  TF_RETURN_IF_ERROR(c->GetAttr("optimizer", &optimizer));
  TF_RETURN_IF_ERROR(c->GetAttr("slot_init", &slot_init));
  TF_RETURN_IF_ERROR(c->GetAttr("min_count", &options->min_count));
  TF_RETURN_IF_ERROR(c->GetAttr("max_rows", &options->max_rows));
  TF_RETURN_IF_ERROR(c->GetAttr("evict_policy", &policy));
  TF_RETURN_IF_ERROR(c->GetAttr("admission", &admission));
  TF_RETURN_IF_ERROR(c->GetAttr("bloom_counters", &options->bloom_counters));
  TF_RETURN_IF_ERROR(c->GetAttr("bloom_hashes", &bloom_hashes));
  if (!ParseOptimizer(optimizer, &options->optimizer)) {
    return errors::InvalidArgument("optimizer must be one of '', sgd, adagrad, adam, ftrl; got '",
                                   optimizer, "'");
  }
  const size_t slots = SlotNames(options->optimizer).size();
  if (slot_init.empty()) slot_init = DefaultSlotInit(options->optimizer);
  if (slot_init.size() != slots) {
    return errors::InvalidArgument("slot_init must hold ", slots, " values for optimizer '",
                                   optimizer, "' (or none for its defaults), got ",
                                   slot_init.size());
  }
  options->slot_init = slot_init;
  if (options->min_count < 0) {
    return errors::InvalidArgument("min_count must be >= 0, got ", options->min_count);
  }
  if (admission != "counter" && admission != "bloom") {
    return errors::InvalidArgument("admission must be counter or bloom; got '", admission, "'");
  }
  options->bloom = admission == "bloom";
  if (options->bloom) {
    if (options->min_count < 2 || options->min_count > AdmissionFilter::kMaxCount) {
      return errors::InvalidArgument("admission='bloom' needs min_count in [2, ",
                                     AdmissionFilter::kMaxCount,
                                     "] (its counters are 8-bit), got ", options->min_count);
    }
    if (options->bloom_counters < EmbeddingTable::kNumShards ||
        options->bloom_counters > (int64_t{1} << 40)) {
      return errors::InvalidArgument("bloom_counters must be in [", EmbeddingTable::kNumShards,
                                     ", 2^40] (one byte each, split over the shards), got ",
                                     options->bloom_counters);
    }
    if (bloom_hashes < 1 || bloom_hashes > AdmissionFilter::kMaxHashes) {
      return errors::InvalidArgument("bloom_hashes must be in [1, ", AdmissionFilter::kMaxHashes,
                                     "], got ", bloom_hashes);
    }
    options->bloom_hashes = static_cast<int>(bloom_hashes);
  }
  if (options->max_rows != 0 && options->max_rows < EmbeddingTable::kNumShards) {
    return errors::InvalidArgument("max_rows must be 0 (no cap) or at least ",
                                   EmbeddingTable::kNumShards,
                                   " (the cap is split over that many shards), got ",
                                   options->max_rows);
  }
  if (policy == "lru") options->cap_policy = TableOptions::CapPolicy::kLru;
  else if (policy == "lfu") options->cap_policy = TableOptions::CapPolicy::kLfu;
  else if (policy == "refuse") options->cap_policy = TableOptions::CapPolicy::kRefuse;
  else return errors::InvalidArgument("evict_policy must be lru, lfu or refuse; got '", policy,
                                      "'");
  return Status();
}

template <typename Device>
class EvHandleOp : public OpKernel {
 public:
  using Table = typename DeviceTable<Device>::type;

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
    OP_REQUIRES_OK(c, ParseTableOptions(c, &options_));
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
      OP_REQUIRES_OK(ctx, cinfo_.resource_manager()->Create<Table>(
                              cinfo_.container(), name,
                              new Table(dim_, default_row_, init_, options_)));
      OP_REQUIRES_OK(ctx, tensorflow::MakeResourceHandleToOutput(
                              ctx, 0, cinfo_.container(), name,
                              tensorflow::TypeIndex::Make<Table>()));
      return;
    }
    Table* table = nullptr;
    OP_REQUIRES_OK(ctx, cinfo_.resource_manager()->LookupOrCreate<Table>(
                            cinfo_.container(), cinfo_.name(), &table,
                            [this](Table** created) {
                              *created = new Table(dim_, default_row_, init_, options_);
                              return Status();
                            }));
    tensorflow::core::ScopedUnref unref(table);
    OP_REQUIRES(ctx, table->dim() == dim_,
                errors::InvalidArgument("EmbeddingVariable '", cinfo_.name(),
                                        "' already exists with dim ", table->dim(),
                                        ", this handle op asks for dim ", dim_));
    OP_REQUIRES(ctx, table->options().optimizer == options_.optimizer,
                errors::InvalidArgument("EmbeddingVariable '", cinfo_.name(),
                                        "' already exists for optimizer '",
                                        OptimizerName(table->options().optimizer),
                                        "', this handle op asks for '",
                                        OptimizerName(options_.optimizer), "'"));
    OP_REQUIRES_OK(ctx, tensorflow::MakeResourceHandleToOutput(
                            ctx, 0, cinfo_.container(), cinfo_.name(),
                            tensorflow::TypeIndex::Make<Table>()));
  }

 private:
  int dim_ = 0;
  std::vector<float> default_row_;
  RowInitializer init_;
  TableOptions options_;
  tensorflow::mutex mu_;
  tensorflow::ContainerInfo cinfo_;
  bool cinfo_ready_ = false;
  bool anonymous_ = false;
};

// The input checks the table kernels share; each names the input in its InvalidArgument.
// `name` must be a vector.
inline Status CheckVector(const Tensor& t, const std::string& name) {
  if (TensorShapeUtils::IsVector(t.shape())) return Status();
  return errors::InvalidArgument(name, " must be 1-D, got shape ", t.shape().DebugString());
}

// `name` must hold one row of `dim` values per key: shape [n, dim].
inline Status CheckRows(const Tensor& t, const std::string& name, int64_t n, int64_t dim) {
  if (t.shape() == TensorShape({n, dim})) return Status();
  return errors::InvalidArgument(name, " must have shape [", n, ", ", dim, "] to match ", n,
                                 " keys, got ", t.shape().DebugString());
}

// Resolves input 0 to the table, checks it against the op's `dim` attr and
// hands it to ComputeWithTable.
template <typename Device>
class EvTableOp : public OpKernel {
 public:
  using Table = typename DeviceTable<Device>::type;

  explicit EvTableOp(OpKernelConstruction* c) : OpKernel(c) {
    if (HasNodeAttr(c->def(), "dim")) OP_REQUIRES_OK(c, c->GetAttr("dim", &dim_));
    // Export/import NodeDefs written before tables had slots carry no num_slots.
    if (HasNodeAttr(c->def(), "num_slots")) {
      OP_REQUIRES_OK(c, c->GetAttr("num_slots", &num_slots_));
    }
  }

  void Compute(OpKernelContext* ctx) override {
    tensorflow::core::RefCountPtr<Table> table;
    OP_REQUIRES_OK(ctx, GetTable(ctx, &table));
    ComputeWithTable(ctx, table.get());
  }

 protected:
  virtual void ComputeWithTable(OpKernelContext* ctx, Table* table) = 0;

  // keys.shape + [dim]: the shape of the rows of keys.
  TensorShape RowsShape(const Tensor& keys) const {
    TensorShape shape = keys.shape();
    shape.AddDim(dim_);
    return shape;
  }

  Status GetTable(OpKernelContext* ctx, tensorflow::core::RefCountPtr<Table>* table) {
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
  int num_slots_ = 0;
};

template <typename Device, typename K>
class EvFindOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const Tensor& keys = ctx->input(1);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, this->RowsShape(keys), &out));
    FindFunctor<Device, K>()(ctx, *table, keys.flat<K>().data(), keys.NumElements(),
                             out->flat<float>().data());
  }
};

template <typename Device, typename K>
class EvFindOrInsertOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const Tensor& keys = ctx->input(1);
    const Tensor& step = ctx->input(2);
    OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(step.shape()),
                errors::InvalidArgument("step must be a scalar, got shape ",
                                        step.shape().DebugString()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, this->RowsShape(keys), &out));
    OP_REQUIRES_OK(ctx, FindOrInsertFunctor<Device, K>()(
                            ctx, table, keys.flat<K>().data(), keys.NumElements(),
                            step.scalar<int64_t>()(), out->flat<float>().data()));
  }
};

template <typename Device, typename K>
class EvInsertOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const Tensor& keys = ctx->input(1);
    const Tensor& values = ctx->input(2);
    const TensorShape expected = this->RowsShape(keys);
    OP_REQUIRES(ctx, values.shape() == expected,
                errors::InvalidArgument("values must have shape keys.shape + [dim] = ",
                                        expected.DebugString(), ", got ",
                                        values.shape().DebugString()));
    OP_REQUIRES_OK(ctx, InsertFunctor<Device, K>()(ctx, table, keys.flat<K>().data(),
                                                   keys.NumElements(),
                                                   values.flat<float>().data()));
  }
};

template <typename Device, typename K>
class EvRemoveOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const Tensor& keys = ctx->input(1);
    RemoveFunctor<Device, K>()(ctx, table, keys.flat<K>().data(), keys.NumElements());
  }
};

template <typename Device>
class EvExportOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const int dim = this->dim_;
    // num_slots 0 exports the values alone (what graphs from before slots ask for).
    const int num_slots = this->num_slots_;
    OP_REQUIRES(ctx, num_slots == 0 || num_slots == table->num_slots(),
                errors::InvalidArgument(
                    this->type_string(), " asks for ", num_slots, " slots but the table's ",
                    OptimizerName(table->options().optimizer), " optimizer keeps ",
                    table->num_slots()));
    const bool with_pending = ctx->num_outputs() > 4;  // GraphoptEvExportWithSlots
    const auto allocate = [=](int64_t n, ExportBuffers* out) -> Status {
      Tensor *keys, *values, *freqs, *versions;
      TF_RETURN_IF_ERROR(ctx->allocate_output(0, {n}, &keys));
      TF_RETURN_IF_ERROR(ctx->allocate_output(1, {n, dim}, &values));
      TF_RETURN_IF_ERROR(ctx->allocate_output(2, {n}, &freqs));
      TF_RETURN_IF_ERROR(ctx->allocate_output(3, {n}, &versions));
      out->keys = keys->flat<int64_t>().data();
      out->values = values->flat<float>().data();
      out->freqs = freqs->flat<int64_t>().data();
      out->versions = versions->flat<int64_t>().data();
      out->slots.clear();
      if (with_pending) {
        Tensor *pending_keys, *pending_counts;
        TF_RETURN_IF_ERROR(ctx->allocate_output("pending_keys", {out->num_pending},
                                                &pending_keys));
        TF_RETURN_IF_ERROR(ctx->allocate_output("pending_counts", {out->num_pending},
                                                &pending_counts));
        out->pending_keys = pending_keys->flat<int64_t>().data();
        out->pending_counts = pending_counts->flat<int64_t>().data();
      }
      if (num_slots == 0) return Status();
      tensorflow::OpOutputList slots;
      TF_RETURN_IF_ERROR(ctx->output_list("slots", &slots));
      for (int j = 0; j < num_slots; ++j) {
        Tensor* slot = nullptr;
        TF_RETURN_IF_ERROR(slots.allocate(j, {n, dim}, &slot));
        out->slots.push_back(slot->flat<float>().data());
      }
      return Status();
    };
    OP_REQUIRES_OK(ctx, ExportFunctor<Device>()(ctx, *table, allocate));
  }
};

template <typename Device>
class EvImportOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const Tensor& keys = ctx->input(1);
    const Tensor& values = ctx->input(2);
    const Tensor& freqs = ctx->input(3);
    const Tensor& versions = ctx->input(4);
    OP_REQUIRES_OK(ctx, CheckVector(keys, "keys"));
    const int64_t n = keys.dim_size(0);
    const int dim = this->dim_;
    OP_REQUIRES_OK(ctx, CheckRows(values, "values", n, dim));
    OP_REQUIRES(ctx, freqs.shape() == TensorShape({n}),
                errors::InvalidArgument("freqs must have shape [", n, "], got ",
                                        freqs.shape().DebugString()));
    OP_REQUIRES(ctx, versions.shape() == TensorShape({n}),
                errors::InvalidArgument("versions must have shape [", n, "], got ",
                                        versions.shape().DebugString()));
    tensorflow::OpInputList slot_inputs;
    const bool with_slots = ctx->num_inputs() > 5;  // GraphoptEvImportWithSlots
    if (with_slots) OP_REQUIRES_OK(ctx, ctx->input_list("slots", &slot_inputs));
    // No slots (a checkpoint from before the table had an optimizer): fresh slots.
    if (slot_inputs.size() > 0) {
      std::string saved_for;
      OP_REQUIRES_OK(ctx, GetNodeAttr(this->def(), "optimizer", &saved_for));
      OP_REQUIRES(ctx, saved_for.empty() ||
                           saved_for == OptimizerName(table->options().optimizer),
                  errors::InvalidArgument(
                      "the slots being restored belong to optimizer '", saved_for,
                      "' but the table was created for '",
                      OptimizerName(table->options().optimizer),
                      "'; restore into a table with the same optimizer"));
    }
    std::vector<const float*> slots;
    for (int j = 0; j < slot_inputs.size(); ++j) {
      OP_REQUIRES_OK(ctx, CheckRows(slot_inputs[j], absl::StrCat("slot ", j), n, dim));
      slots.push_back(slot_inputs[j].flat<float>().data());
    }
    PendingCounts pending;
    if (with_slots) {
      const Tensor& pending_keys = ctx->input(5 + slot_inputs.size());
      const Tensor& pending_counts = ctx->input(6 + slot_inputs.size());
      OP_REQUIRES(ctx, TensorShapeUtils::IsVector(pending_keys.shape()) &&
                           pending_counts.shape() == pending_keys.shape(),
                  errors::InvalidArgument("pending_keys and pending_counts must be 1-D of one "
                                          "length, got ", pending_keys.shape().DebugString(),
                                          " and ", pending_counts.shape().DebugString()));
      pending = {pending_keys.flat<int64_t>().data(), pending_counts.flat<int64_t>().data(),
                 pending_keys.NumElements()};
    }
    OP_REQUIRES_OK(ctx, ImportFunctor<Device>()(ctx, table, keys.flat<int64_t>().data(), n,
                                                values.flat<float>().data(),
                                                freqs.flat<int64_t>().data(),
                                                versions.flat<int64_t>().data(), slots,
                                                pending));
  }
};

template <typename Device>
class EvSizeOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {}, &out));
    out->scalar<int64_t>()() = table->Size();
  }
};

template <typename Device>
class EvMemoryOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;
  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    Tensor *bytes = nullptr, *capacity = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {}, &bytes));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, {}, &capacity));
    bytes->scalar<int64_t>()() = table->BytesUsed();
    capacity->scalar<int64_t>()() = table->Capacity();
  }
};


// Reads a float scalar input; `what` names it in the message.
inline Status ScalarInput(OpKernelContext* ctx, int index, const char* what, float* value) {
  const Tensor& t = ctx->input(index);
  if (!TensorShapeUtils::IsScalar(t.shape())) {
    return errors::InvalidArgument(what, " must be a scalar, got shape ",
                                   t.shape().DebugString());
  }
  *value = t.scalar<float>()();
  if (!std::isfinite(*value)) return errors::InvalidArgument(what, " must be finite, got ", *value);
  return Status();
}

// Inputs: table, keys [n], grads [n, dim], then the optimizer's scalars.
template <typename Device, typename K>
class EvApplyOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using typename Base::Table;

  EvApplyOp(OpKernelConstruction* c, OptimizerKind kind) : Base(c), kind_(kind) {
    if (kind == OptimizerKind::kSgd) {
      bool sum_duplicates = true;
      OP_REQUIRES_OK(c, c->GetAttr("sum_duplicates", &sum_duplicates));
      per_occurrence_ = !sum_duplicates;
    }
    if (kind == OptimizerKind::kAdagrad) OP_REQUIRES_OK(c, c->GetAttr("rsqrt", &rsqrt_));
  }

  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const OptimizerKind owned = table->options().optimizer;
    // SGD keeps no slots, so it trains tables created without an optimizer too.
    const bool fits = owned == kind_ ||
                      (kind_ == OptimizerKind::kSgd && owned == OptimizerKind::kNone);
    OP_REQUIRES(ctx, fits,
                errors::InvalidArgument(this->type_string(), " cannot update a table created for ",
                                        "optimizer '", OptimizerName(owned),
                                        "'; create the EmbeddingVariable with optimizer '",
                                        OptimizerName(kind_), "'"));
    const Tensor& keys = ctx->input(1);
    const Tensor& grads = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckVector(keys, "keys"));
    const int64_t n = keys.dim_size(0);
    OP_REQUIRES_OK(ctx, CheckRows(grads, "grads", n, this->dim_));
    OptimizerParams p;
    p.kind = kind_;
    p.per_occurrence = per_occurrence_;
    p.rsqrt = rsqrt_;
    OP_REQUIRES_OK(ctx, ScalarInput(ctx, 3, "lr", &p.lr));
    OP_REQUIRES(ctx, p.lr >= 0, errors::InvalidArgument("lr must be >= 0, got ", p.lr));
    switch (kind_) {
      case OptimizerKind::kAdagrad:
        OP_REQUIRES_OK(ctx, ScalarInput(ctx, 4, "epsilon", &p.epsilon));
        OP_REQUIRES(ctx, p.epsilon >= 0,
                    errors::InvalidArgument("epsilon must be >= 0, got ", p.epsilon));
        OP_REQUIRES(ctx, !rsqrt_ || p.epsilon == 0,
                    errors::InvalidArgument("rsqrt=true is v1 Adagrad, which has no epsilon: "
                                            "epsilon must be 0, got ", p.epsilon));
        break;
      case OptimizerKind::kAdam:
        OP_REQUIRES_OK(ctx, ScalarInput(ctx, 4, "beta1", &p.beta1));
        OP_REQUIRES_OK(ctx, ScalarInput(ctx, 5, "beta2", &p.beta2));
        OP_REQUIRES_OK(ctx, ScalarInput(ctx, 6, "epsilon", &p.epsilon));
        OP_REQUIRES_OK(ctx, ScalarInput(ctx, 7, "beta1_power", &p.beta1_power));
        OP_REQUIRES_OK(ctx, ScalarInput(ctx, 8, "beta2_power", &p.beta2_power));
        OP_REQUIRES(ctx, p.beta1 >= 0 && p.beta1 < 1 && p.beta2 >= 0 && p.beta2 < 1,
                    errors::InvalidArgument("beta1 and beta2 must be in [0, 1), got ", p.beta1,
                                            " and ", p.beta2));
        OP_REQUIRES(ctx, p.epsilon >= 0,
                    errors::InvalidArgument("epsilon must be >= 0, got ", p.epsilon));
        OP_REQUIRES(ctx,
                    p.beta1_power >= 0 && p.beta1_power < 1 && p.beta2_power >= 0 &&
                        p.beta2_power < 1,
                    errors::InvalidArgument("beta1_power and beta2_power (beta^step, step >= 1) "
                                            "must be in [0, 1), got ", p.beta1_power, " and ",
                                            p.beta2_power));
        break;
      case OptimizerKind::kFtrl:
        OP_REQUIRES_OK(ctx, ScalarInput(ctx, 4, "l1", &p.l1));
        OP_REQUIRES_OK(ctx, ScalarInput(ctx, 5, "l2", &p.l2));
        OP_REQUIRES_OK(ctx, ScalarInput(ctx, 6, "lr_power", &p.lr_power));
        OP_REQUIRES(ctx, p.lr > 0, errors::InvalidArgument("FTRL's lr must be > 0, got ", p.lr));
        OP_REQUIRES(ctx, p.l1 >= 0 && p.l2 >= 0,
                    errors::InvalidArgument("l1 and l2 must be >= 0, got ", p.l1, " and ", p.l2));
        OP_REQUIRES(ctx, p.lr_power <= 0,
                    errors::InvalidArgument("lr_power must be <= 0, got ", p.lr_power));
        break;
      default:
        break;
    }
    OP_REQUIRES_OK(ctx, SparseApplyFunctor<Device, K>()(ctx, table, keys.flat<K>().data(), n,
                                                        grads.flat<float>().data(), p));
  }

 private:
  const OptimizerKind kind_;
  bool per_occurrence_ = false;
  bool rsqrt_ = false;
};

template <typename Device, typename K, OptimizerKind kKind>
class EvApplyKindOp : public EvApplyOp<Device, K> {
 public:
  explicit EvApplyKindOp(OpKernelConstruction* c) : EvApplyOp<Device, K>(c, kKind) {}
};

template <typename Device>
class EvEvictOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using typename Base::Table;

  explicit EvEvictOp(OpKernelConstruction* c) : Base(c) {
    std::string policy;
    OP_REQUIRES_OK(c, c->GetAttr("policy", &policy));
    OP_REQUIRES(c, policy == "lru" || policy == "lfu",
                errors::InvalidArgument("policy must be 'lru' or 'lfu', got '", policy, "'"));
    lfu_ = policy == "lfu";
  }

  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    EvictionRule rule;
    rule.lfu = lfu_;
    int64_t* fields[] = {&rule.step, &rule.ttl, &rule.min_freq, &rule.max_rows};
    const char* names[] = {"step", "ttl", "min_freq", "max_rows"};
    for (int i = 0; i < 4; ++i) {
      const Tensor& t = ctx->input(1 + i);
      OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(t.shape()),
                  errors::InvalidArgument(names[i], " must be a scalar, got shape ",
                                          t.shape().DebugString()));
      *fields[i] = t.scalar<int64_t>()();
      OP_REQUIRES(ctx, i == 0 || *fields[i] >= 0,
                  errors::InvalidArgument(names[i], " must be >= 0 (0 disables it), got ",
                                          *fields[i]));
    }
    std::vector<int64_t> evicted;
    OP_REQUIRES_OK(ctx, EvictFunctor<Device>()(ctx, table, rule, &evicted));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {static_cast<int64_t>(evicted.size())}, &out));
    std::copy(evicted.begin(), evicted.end(), out->flat<int64_t>().data());
  }

 private:
  bool lfu_ = false;
};

template <typename Device>
class EvStatsOp : public EvTableOp<Device> {
 public:
  using Base = EvTableOp<Device>;
  using Base::Base;
  using typename Base::Table;

  void ComputeWithTable(OpKernelContext* ctx, Table* table) override {
    const TableStats st = table->Stats();
    const int64_t values[] = {st.size, st.admitted, st.evicted, st.pending, st.bytes_used};
    for (int i = 0; i < 5; ++i) {
      Tensor* out = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(i, {}, &out));
      out->scalar<int64_t>()() = values[i];
    }
  }
};

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_EMBEDDING_VARIABLE_KERNELS_H_
