// The prepared GPU check (`make gpu-check`, docs/cuda.md): GpuEmbeddingTable against the
// host ReferenceTable, the error paths, and the benchmark, on whatever GPU runs it.
//
//   ev_gpu_check [--quick] [--no-bench] [--out FILE]
//
// --quick: small sizes (for compute-sanitizer). Writes a JSON report to FILE (default
// gpu_check.json), prints one line per check and exits 1 if any check failed.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

#include "embedding_variable/cuda/ev_gpu_table.cuh"
#include "embedding_variable/cuda/ev_reference_table.h"

namespace graphopt {
namespace gpu {
namespace {

#define CUDA_OR_DIE(expr)                                                              \
  do {                                                                                 \
    cudaError_t e_ = (expr);                                                           \
    if (e_ != cudaSuccess) {                                                           \
      fprintf(stderr, "ev_gpu_check: %s failed: %s (%s:%d)\n", #expr,                  \
              cudaGetErrorString(e_), __FILE__, __LINE__);                             \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

template <typename T>
struct DeviceBuffer {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    CUDA_OR_DIE(cudaMalloc(&p, std::max<size_t>(1, count) * sizeof(T)));
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  void Upload(const T* host, size_t count) {
    CUDA_OR_DIE(cudaMemcpy(p, host, count * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> Download(size_t count) const {
    std::vector<T> host(count);
    CUDA_OR_DIE(cudaMemcpy(host.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

struct Report {
  std::vector<std::string> checks;
  std::vector<std::string> figures;
  int failures = 0;
  void Check(const std::string& name, bool pass, const std::string& detail) {
    printf("%s %s%s%s\n", pass ? "PASS" : "FAIL", name.c_str(), detail.empty() ? "" : ": ",
           detail.c_str());
    fflush(stdout);
    failures += !pass;
    std::string d;
    for (char c : detail) d += c == '"' ? '\'' : c;
    checks.push_back("{\"name\": \"" + name + "\", \"pass\": " + (pass ? "true" : "false") +
                     ", \"detail\": \"" + d + "\"}");
  }
  void Figure(const std::string& name, double value) {
    char buffer[256];
    snprintf(buffer, sizeof(buffer), "\"%s\": %.6g", name.c_str(), value);
    figures.push_back(buffer);
    printf("  %s = %.6g\n", name.c_str(), value);
    fflush(stdout);
  }
};

Report report;

std::string Str(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Str(const char* fmt, ...) {
  char buffer[512];
  va_list args;
  va_start(args, fmt);
  vsnprintf(buffer, sizeof(buffer), fmt, args);
  va_end(args);
  return buffer;
}

bool SameBits(const float* a, const float* b, size_t n, size_t* first_diff) {
  if (std::memcmp(a, b, n * sizeof(float)) == 0) return true;
  for (size_t i = 0; i < n; ++i) {
    if (std::memcmp(a + i, b + i, sizeof(float)) != 0) {
      *first_diff = i;
      return false;
    }
  }
  return true;
}

// Slot arrays are [num_slots][n][dim]: key i of a against key j of b.
bool SameSlots(const std::vector<float>& a, int64_t i, const std::vector<float>& b, int64_t j,
               int64_t n, int num_slots) {
  const int64_t dim = a.size() / std::max<int64_t>(1, n * num_slots);
  for (int s = 0; s < num_slots; ++s) {
    if (std::memcmp(&a[(s * n + i) * dim], &b[(s * n + j) * dim], dim * sizeof(float)) != 0) {
      return false;
    }
  }
  return true;
}

RowInitializer Uniform(int64_t seed) {
  RowInitializer init;
  init.kind = RowInitializer::Kind::kUniform;
  init.minval = -0.25f;
  init.maxval = 0.5f;
  init.seed = seed;
  return init;
}

// ---- initializer rows: device Fill vs host Fill -------------------------------------------

__global__ void FillRowsKernel(RowInitializer init, const int64_t* keys, int64_t n, int dim,
                               float* out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n) init.Fill(keys[i], dim, out + i * dim);
}

void CheckInitializerRows(int64_t n) {
  const int dim = 16;
  std::mt19937_64 rng(1);
  std::vector<int64_t> keys(n);
  for (auto& k : keys) k = static_cast<int64_t>(rng());
  keys[0] = INT64_MIN, keys[1] = INT64_MAX, keys[2] = 0, keys[3] = -1;
  DeviceBuffer<int64_t> d_keys(n);
  d_keys.Upload(keys.data(), n);
  DeviceBuffer<float> d_rows(n * dim);
  const char* names[] = {"zeros", "constant", "uniform", "normal", "truncated_normal"};
  for (int kind = 0; kind < 5; ++kind) {
    RowInitializer init = Uniform(12345);
    init.kind = static_cast<RowInitializer::Kind>(kind);
    init.value = 0.3f, init.mean = 0.1f, init.stddev = 0.7f;
    FillRowsKernel<<<(n + 255) / 256, 256>>>(init, d_keys.p, n, dim, d_rows.p);
    CUDA_OR_DIE(cudaGetLastError());
    const std::vector<float> gpu = d_rows.Download(n * dim);
    std::vector<float> host(n * dim);
    for (int64_t i = 0; i < n; ++i) init.Fill(keys[i], dim, host.data() + i * dim);
    int64_t mismatched = 0;
    double max_diff = 0;
    for (int64_t i = 0; i < n * dim; ++i) {
      if (std::memcmp(&gpu[i], &host[i], sizeof(float)) != 0) {
        ++mismatched;
        max_diff = std::max(max_diff, std::fabs(static_cast<double>(gpu[i]) - host[i]));
      }
    }
    // zeros / constant / uniform use only integer ops, + and * in double: bit-identical.
    // The normal kinds also take log and cos, whose CUDA and glibc results may differ in
    // the last bit of a double; counted here, and allowed only at float rounding level.
    const bool exact = kind <= 2;
    const bool pass = exact ? mismatched == 0 : max_diff <= 1e-6;
    report.Check(std::string("initializer_rows_") + names[kind], pass,
                 Str("%" PRId64 " of %" PRId64 " floats differ from the host, max |diff| %.3g",
                     mismatched, n * dim, max_diff));
    report.Figure(std::string("initializer_mismatched_floats_") + names[kind], mismatched);
  }
}

// ---- table vs reference ---------------------------------------------------------------------

struct Case {
  std::string name;
  int dim = 8;
  Optimizer optimizer = Optimizer::kNone;
  int64_t capacity = 1 << 16;
  double load = 0.7;  // keys inserted per slot of the initial capacity
  int64_t batch = 4096;
  KeyDtype dtype = KeyDtype::kInt64;
  float max_load = 0.95f;
};

class TableCheck {
 public:
  explicit TableCheck(const Case& c) : c_(c), rng_(std::hash<std::string>()(c.name)) {
    TableConfig config;
    config.dim = c.dim;
    config.optimizer = c.optimizer;
    config.slot_init[0] = 0.1f;
    config.slot_init[1] = 0.f;
    config.init = Uniform(7);
    for (int i = 0; i < c.dim; ++i) config.default_row.push_back(-1.f - 0.5f * i);
    config.initial_capacity = c.capacity;
    config.max_load = c.max_load;
    Status st = GpuEmbeddingTable::Create(config, nullptr, &table_);
    if (!st.ok()) {
      report.Check(c.name + "_create", false, st.message);
      return;
    }
    ref_.reset(new ReferenceTable(c.dim, c.optimizer, config.slot_init, config.init,
                                  config.default_row));
  }

  void Run() {
    if (!table_) return;
    const int64_t total = static_cast<int64_t>(c_.load * c_.capacity);
    // Keys worth testing in the first batch: the two index markers, the extremes.
    std::vector<int64_t> special = {kEmptyKey, kTombstoneKey, INT64_MIN, 0, -1, 1};
    if (c_.dtype == KeyDtype::kInt32) special = {INT32_MAX, INT32_MIN, 0, -1, 1};
    bool ok = true;
    size_t diff = 0;
    int64_t step = 0;
    // Find-or-insert, batch after batch: ~80% new keys, ~20% repeats (in and across batches).
    while (static_cast<int64_t>(seen_.size()) < total && ok) {
      std::vector<int64_t> batch;
      if (step == 0) batch = special;
      while (static_cast<int64_t>(batch.size()) < c_.batch) {
        if (!seen_.empty() && rng_() % 5 == 0) {
          batch.push_back(seen_[rng_() % seen_.size()]);
        } else {
          batch.push_back(NewKey());
          seen_.push_back(batch.back());
        }
      }
      for (int64_t k : special) {
        if (step == 0) seen_.push_back(k);
      }
      ++step;
      ok = Compare("find_or_insert", batch, step, &diff);
    }
    report.Check(c_.name + "_find_or_insert", ok && table_->size() == ref_->size(),
                 Str("%" PRId64 " keys at load %.2f, %" PRId64 " batches; size gpu %" PRId64
                     " ref %" PRId64,
                     ref_->size(), ref_->size() / static_cast<double>(table_->capacity()), step,
                     table_->size(), ref_->size()));
    // Find: half present, half absent keys.
    std::vector<int64_t> batch = Mixed(c_.batch);
    report.Check(c_.name + "_find", Compare("find", batch, 0, &diff), "");
    // Remove ~10% (some twice, some absent), then find again.
    std::vector<int64_t> gone = Mixed(std::max<int64_t>(1, ref_->size() / 10));
    for (int64_t i = 0; i < static_cast<int64_t>(gone.size()) / 10; ++i) gone.push_back(gone[i]);
    Status st = Remove(gone);
    ref_->Remove(gone.data(), gone.size());
    report.Check(c_.name + "_remove", st.ok() && table_->size() == ref_->size() &&
                                          Compare("find", gone, 0, &diff),
                 st.message + Str(" size gpu %" PRId64 " ref %" PRId64, table_->size(),
                                  ref_->size()));
    // Insert with repeated keys (the last row wins), some removed keys back in.
    batch = Mixed(c_.batch);
    for (int64_t i = 0; i < c_.batch / 8; ++i) batch.push_back(batch[i]);
    for (int64_t i = 0; i < static_cast<int64_t>(gone.size()) && i < c_.batch / 8; ++i) {
      batch.push_back(gone[i]);
    }
    std::vector<float> values(batch.size() * c_.dim);
    for (auto& v : values) v = static_cast<float>(rng_() % 20001) / 1000.f - 10.f;
    st = Insert(batch, values);
    ref_->Insert(batch.data(), batch.size(), values.data());
    report.Check(c_.name + "_insert", st.ok() && table_->size() == ref_->size() &&
                                          Compare("find", batch, 0, &diff),
                 st.message);
    if (c_.optimizer != Optimizer::kNone) CheckApply();
    CheckExport();
  }

 private:
  int64_t NewKey() {
    if (c_.dtype == KeyDtype::kInt32) {
      for (;;) {
        const int64_t k = static_cast<int32_t>(rng_());
        if (used32_.insert(k).second) return k;
      }
    }
    return static_cast<int64_t>(rng_());  // a repeat among 2^64 is as good as a test of it
  }

  std::vector<int64_t> Mixed(int64_t n) {
    std::vector<int64_t> keys;
    while (static_cast<int64_t>(keys.size()) < n) {
      keys.push_back(rng_() % 2 ? seen_[rng_() % seen_.size()] : NewKey());
    }
    return keys;
  }

  // Uploads keys in the case's dtype.
  std::unique_ptr<DeviceBuffer<char>> Keys(const std::vector<int64_t>& keys) {
    const size_t width = c_.dtype == KeyDtype::kInt32 ? 4 : 8;
    std::unique_ptr<DeviceBuffer<char>> d(new DeviceBuffer<char>(keys.size() * width));
    if (width == 8) {
      d->Upload(reinterpret_cast<const char*>(keys.data()), keys.size() * 8);
    } else {
      std::vector<int32_t> narrow(keys.begin(), keys.end());
      d->Upload(reinterpret_cast<const char*>(narrow.data()), keys.size() * 4);
    }
    return d;
  }

  bool Compare(const std::string& op, const std::vector<int64_t>& keys, int64_t step,
               size_t* diff) {
    const int64_t n = keys.size();
    auto d_keys = Keys(keys);
    DeviceBuffer<float> d_out(n * c_.dim);
    Status st = op == "find" ? table_->Find(d_keys->p, c_.dtype, n, d_out.p)
                             : table_->FindOrInsert(d_keys->p, c_.dtype, n, step, d_out.p);
    CUDA_OR_DIE(cudaDeviceSynchronize());
    if (!st.ok()) {
      report.Check(c_.name + "_" + op + "_status", false, st.message);
      return false;
    }
    std::vector<float> want(n * c_.dim);
    if (op == "find") {
      ref_->Find(keys.data(), n, want.data());
    } else {
      ref_->FindOrInsert(keys.data(), n, step, want.data());
    }
    const std::vector<float> got = d_out.Download(n * c_.dim);
    if (!SameBits(got.data(), want.data(), got.size(), diff)) {
      const int64_t i = *diff / c_.dim;
      report.Check(c_.name + "_" + op + "_rows", false,
                   Str("key %" PRId64 " column %d: gpu %a, reference %a", keys[i],
                       static_cast<int>(*diff % c_.dim), got[*diff], want[*diff]));
      return false;
    }
    return true;
  }

  Status Remove(const std::vector<int64_t>& keys) {
    auto d_keys = Keys(keys);
    return table_->Remove(d_keys->p, c_.dtype, keys.size());
  }

  Status Insert(const std::vector<int64_t>& keys, const std::vector<float>& values) {
    auto d_keys = Keys(keys);
    DeviceBuffer<float> d_values(values.size());
    d_values.Upload(values.data(), values.size());
    Status st = table_->Insert(d_keys->p, c_.dtype, keys.size(), d_values.p);
    CUDA_OR_DIE(cudaDeviceSynchronize());
    return st;
  }

  void CheckApply() {
    OptimizerParams p;
    p.kind = c_.optimizer;
    p.lr = 0.05f;
    p.epsilon = 1e-7f;
    p.l1 = 0.01f, p.l2 = 0.02f, p.l2_shrinkage = 0.005f;
    bool ok = true;
    std::string detail;
    for (int64_t t = 1; t <= 3 && ok; ++t) {
      p.beta1_power = std::pow(p.beta1, static_cast<float>(t));
      p.beta2_power = std::pow(p.beta2, static_cast<float>(t));
      std::vector<int64_t> keys = Mixed(c_.batch);  // some absent: skipped by the apply
      for (int64_t i = 0; i < c_.batch / 4; ++i) keys.push_back(keys[rng_() % keys.size()]);
      std::shuffle(keys.begin(), keys.end(), rng_);
      std::vector<float> grads(keys.size() * c_.dim);
      for (auto& g : grads) g = static_cast<float>(static_cast<int>(rng_() % 2001) - 1000) / 997.f;
      auto d_keys = Keys(keys);
      DeviceBuffer<float> d_grads(grads.size());
      d_grads.Upload(grads.data(), grads.size());
      Status st = table_->Apply(p, d_keys->p, c_.dtype, keys.size(), d_grads.p);
      CUDA_OR_DIE(cudaDeviceSynchronize());
      ref_->Apply(p, keys.data(), keys.size(), grads.data());
      ok = st.ok() && table_->size() == ref_->size();
      detail = st.message;
    }
    report.Check(c_.name + "_apply_status", ok, detail);
  }

  // Export against the reference (every entry: value, slots, freq, last step), then an
  // import of that export into a fresh table exports the same.
  void CheckExport() {
    const int64_t n = table_->size();
    const int num_slots = table_->num_slots(), slot_floats = num_slots * c_.dim;
    DeviceBuffer<int64_t> keys(n), freqs(n), versions(n);
    DeviceBuffer<float> values(n * c_.dim), slots(n * slot_floats);
    // One [n, dim] array per slot, as the checkpoint keeps them.
    std::vector<float*> slot_arrays;
    for (int s = 0; s < num_slots; ++s) slot_arrays.push_back(slots.p + s * n * c_.dim);
    Status st = table_->Export(keys.p, values.p, freqs.p, versions.p, slot_arrays);
    if (!st.ok()) {
      report.Check(c_.name + "_export", false, st.message);
      return;
    }
    const auto h_keys = keys.Download(n), h_freqs = freqs.Download(n),
               h_versions = versions.Download(n);
    const auto h_values = values.Download(n * c_.dim),
               h_slot_arrays = slots.Download(n * slot_floats);
    // h_slots[i]: key i's slots, [slot_0 | slot_1] as in its entry
    std::vector<float> h_slots(n * slot_floats);
    for (int64_t i = 0; i < n; ++i) {
      for (int s = 0; s < num_slots; ++s) {
        std::memcpy(&h_slots[i * slot_floats + s * c_.dim], &h_slot_arrays[(s * n + i) * c_.dim],
                    c_.dim * sizeof(float));
      }
    }
    int64_t bad = 0;
    std::string first;
    std::unordered_set<int64_t> unique;
    for (int64_t i = 0; i < n; ++i) {
      auto it = ref_->entries().find(h_keys[i]);
      bool same = it != ref_->entries().end() && unique.insert(h_keys[i]).second;
      if (same) {
        const auto& e = it->second;
        same = std::memcmp(e.row.data(), &h_values[i * c_.dim], c_.dim * 4) == 0 &&
               std::memcmp(e.row.data() + c_.dim, h_slots.data() + i * slot_floats,
                           slot_floats * 4) == 0 &&
               static_cast<uint64_t>(h_freqs[i]) == std::min<uint64_t>(e.freq, 0xffffffffULL) &&
               h_versions[i] == e.version;
      }
      if (!same && bad++ == 0) first = Str("first at key %" PRId64, h_keys[i]);
    }
    report.Check(c_.name + "_export", bad == 0 && n == ref_->size(),
                 Str("%" PRId64 " entries, %" PRId64 " differ from the reference ", n, bad) + first);

    std::unique_ptr<GpuEmbeddingTable> copy;
    TableConfig config;
    config.dim = c_.dim;
    config.optimizer = c_.optimizer;
    config.init = Uniform(7);
    config.initial_capacity = 16;
    std::vector<const float*> import_slots(slot_arrays.begin(), slot_arrays.end());
    if (!(st = GpuEmbeddingTable::Create(config, nullptr, &copy)).ok() ||
        !(st = copy->Import(keys.p, n, values.p, freqs.p, versions.p, import_slots)).ok()) {
      report.Check(c_.name + "_import", false, st.message);
      return;
    }
    DeviceBuffer<int64_t> keys2(n), freqs2(n), versions2(n);
    DeviceBuffer<float> values2(n * c_.dim), slots2(n * slot_floats);
    std::vector<float*> slot_arrays2;
    for (int s = 0; s < num_slots; ++s) slot_arrays2.push_back(slots2.p + s * n * c_.dim);
    st = copy->Export(keys2.p, values2.p, freqs2.p, versions2.p, slot_arrays2);
    // Both in index order of their own index: compare as maps.
    const auto k2 = keys2.Download(n), f2 = freqs2.Download(n), v2 = versions2.Download(n);
    const auto r2 = values2.Download(n * c_.dim), s2 = slots2.Download(n * slot_floats);
    // both exports keep slots as per-slot arrays: compare array by array
    std::unordered_map<int64_t, int64_t> at;
    for (int64_t i = 0; i < n; ++i) at[h_keys[i]] = i;
    bad = 0;
    for (int64_t j = 0; j < n; ++j) {
      auto it = at.find(k2[j]);
      const int64_t i = it == at.end() ? -1 : it->second;
      if (i < 0 || f2[j] != h_freqs[i] || v2[j] != h_versions[i] ||
          std::memcmp(&r2[j * c_.dim], &h_values[i * c_.dim], c_.dim * 4) != 0 ||
          !SameSlots(s2, j, h_slot_arrays, i, n, num_slots)) {
        ++bad;
      }
    }
    report.Check(c_.name + "_import_round_trip",
                 st.ok() && copy->size() == n && bad == 0,
                 st.message + Str("%" PRId64 " of %" PRId64 " entries differ", bad, n));
  }

  const Case c_;
  std::mt19937_64 rng_;
  std::unique_ptr<GpuEmbeddingTable> table_;
  std::unique_ptr<ReferenceTable> ref_;
  std::vector<int64_t> seen_;
  std::unordered_set<int64_t> used32_;
};

// Many tiles inserting the same new keys at once insert each once.
void CheckConcurrentInsert(int64_t copies) {
  TableConfig config;
  config.dim = 8;
  config.init = Uniform(3);
  std::unique_ptr<GpuEmbeddingTable> table;
  Status st = GpuEmbeddingTable::Create(config, nullptr, &table);
  if (!st.ok()) return report.Check("concurrent_find_or_insert", false, st.message);
  const int64_t distinct = 1000;
  std::vector<int64_t> keys(copies, 42);
  for (int64_t i = 0; i < distinct * 100; ++i) keys.push_back(1000 + i % distinct);
  std::shuffle(keys.begin(), keys.end(), std::mt19937_64(5));
  DeviceBuffer<int64_t> d_keys(keys.size());
  d_keys.Upload(keys.data(), keys.size());
  DeviceBuffer<float> out(keys.size() * 8);
  st = table->FindOrInsert(d_keys.p, KeyDtype::kInt64, keys.size(), 9, out.p);
  const int64_t n = table->size();
  DeviceBuffer<int64_t> k(n), f(n), v(n);
  DeviceBuffer<float> rows(n * 8);
  if (st.ok()) st = table->Export(k.p, rows.p, f.p, v.p, {});
  const auto hk = k.Download(n), hf = f.Download(n), hv = v.Download(n);
  bool counts = true;
  for (int64_t i = 0; i < n; ++i) {
    counts &= hf[i] == (hk[i] == 42 ? copies : 100) && hv[i] == 9;
  }
  report.Check("concurrent_find_or_insert", st.ok() && n == distinct + 1 && counts,
               st.message + Str("%" PRId64 " copies of one key and 100 of %" PRId64
                                " others: %" PRId64 " keys (want %" PRId64 ")",
                                copies, distinct, n, distinct + 1));
}

void CheckErrors(bool quick) {
  size_t free0, total;
  CUDA_OR_DIE(cudaMemGetInfo(&free0, &total));
  {
    TableConfig config;
    config.dim = 8;
    std::unique_ptr<GpuEmbeddingTable> table;
    Status st = GpuEmbeddingTable::Create(config, nullptr, &table);
    DeviceBuffer<int64_t> keys(4);
    DeviceBuffer<float> out(32);
    Status bad = table->Find(keys.p, static_cast<KeyDtype>(1), 4, out.p);  // DT_FLOAT
    report.Check("error_key_dtype", st.ok() && bad.code == Status::kInvalidArgument,
                 bad.message);
    OptimizerParams p;
    p.kind = Optimizer::kAdam;
    bad = table->Apply(p, keys.p, KeyDtype::kInt64, 4, out.p);
    report.Check("error_optimizer_mismatch", bad.code == Status::kInvalidArgument, bad.message);
  }
  for (int dim : {0, kMaxDim + 1}) {
    TableConfig config;
    config.dim = dim;
    std::unique_ptr<GpuEmbeddingTable> table;
    Status st = GpuEmbeddingTable::Create(config, nullptr, &table);
    report.Check(Str("error_dim_%d", dim), st.code == Status::kInvalidArgument && !table,
                 st.message);
  }
  {
    // A table twice the free memory: refused up front.
    TableConfig config;
    config.dim = 64;
    config.initial_capacity = static_cast<int64_t>(free0 / (24 + 4 * 64)) * 2;
    std::unique_ptr<GpuEmbeddingTable> table;
    Status st = GpuEmbeddingTable::Create(config, nullptr, &table);
    report.Check("error_table_larger_than_memory",
                 st.code == Status::kResourceExhausted && !table, st.message);
  }
  if (!quick) {
    // A table of ~60% of free memory cannot double: the growth fails cleanly and the
    // table keeps working.
    TableConfig config;
    config.dim = 64;
    config.initial_capacity = static_cast<int64_t>(free0 * 0.6 / (24 + 4 * 64));
    std::unique_ptr<GpuEmbeddingTable> table;
    Status st = GpuEmbeddingTable::Create(config, nullptr, &table);
    const int64_t n = table ? table->capacity() : 0;  // more keys than slots: must grow
    if (st.ok()) {
      DeviceBuffer<int64_t> keys(1 << 20);
      std::vector<int64_t> h(1 << 20);
      for (int64_t i = 0; i < (1 << 20); ++i) h[i] = i;
      keys.Upload(h.data(), h.size());
      DeviceBuffer<float> out((1 << 20) * 64);
      st = Status::Ok();
      int64_t done = 0;
      while (st.ok() && done < n) {
        // same 1M keys each time would not grow; shift them
        for (auto& k : h) k += 1 << 20;
        keys.Upload(h.data(), h.size());
        st = table->FindOrInsert(keys.p, KeyDtype::kInt64, 1 << 20, 1, out.p);
        done += 1 << 20;
      }
      Status after = table->Find(keys.p, KeyDtype::kInt64, 1 << 20, out.p);
      report.Check("error_growth_out_of_memory",
                   st.code == Status::kResourceExhausted && after.ok(),
                   st.message + Str(" (after %" PRId64 " keys)", done));
    } else {
      report.Check("error_growth_out_of_memory", false, st.message);
    }
  }
  CUDA_OR_DIE(cudaDeviceSynchronize());
  size_t free1;
  CUDA_OR_DIE(cudaMemGetInfo(&free1, &total));
  // The driver may keep a little for itself (module loads); a leaked table is GiBs.
  const double leaked = (static_cast<double>(free0) - free1) / (1 << 20);
  report.Check("no_device_memory_leaked", leaked < 64,
               Str("free memory before %.1f MiB, after %.1f MiB", free0 / 1048576.0,
                   free1 / 1048576.0));
}

// ---- benchmark ------------------------------------------------------------------------------

__global__ void KeysKernel(int64_t first, int64_t n, int64_t* keys) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n) keys[i] = static_cast<int64_t>(SplitMix64(static_cast<uint64_t>(first + i)));
}

// Keys of random earlier inserts: key of index SplitMix64(seed + i) % inserted.
__global__ void HitKeysKernel(uint64_t seed, int64_t inserted, int64_t n, int64_t* keys) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (i < n) {
    const uint64_t j = SplitMix64(seed + i) % static_cast<uint64_t>(inserted);
    keys[i] = static_cast<int64_t>(SplitMix64(j));
  }
}

double Seconds(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  CUDA_OR_DIE(cudaEventElapsedTime(&ms, a, b));
  return ms / 1e3;
}

double CopyBandwidth() {
  const size_t bytes = size_t{2} << 30;
  DeviceBuffer<char> a(bytes), b(bytes);
  CUDA_OR_DIE(cudaMemset(a.p, 1, bytes));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  CUDA_OR_DIE(cudaMemcpy(b.p, a.p, bytes, cudaMemcpyDeviceToDevice));
  const int reps = 10;
  cudaEventRecord(e0);
  for (int r = 0; r < reps; ++r) cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(e1);
  CUDA_OR_DIE(cudaEventSynchronize(e1));
  const double t = Seconds(e0, e1);
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  return 2.0 * bytes * reps / t;  // bytes read + written per second
}

double headline_find = 0, headline_pct = 0;  // dim 64

void Bench(int64_t capacity, double load, int64_t batch, double copy_bw) {
  for (int dim : {8, 64, 128}) {
    TableConfig config;
    config.dim = dim;
    config.init = Uniform(1);
    config.initial_capacity = capacity;
    config.max_load = 0.95f;
    std::unique_ptr<GpuEmbeddingTable> table;
    Status st = GpuEmbeddingTable::Create(config, nullptr, &table);
    if (!st.ok()) {
      report.Check(Str("bench_dim%d", dim), false, st.message);
      continue;
    }
    DeviceBuffer<int64_t> keys(batch);
    DeviceBuffer<float> out(batch * dim);
    const int64_t target = static_cast<int64_t>(load * table->capacity());
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    // Fill: find-or-insert of new keys only.
    double insert_s = 0;
    int64_t inserted = 0;
    while (st.ok() && inserted < target) {
      KeysKernel<<<(batch + 255) / 256, 256>>>(inserted, batch, keys.p);
      cudaEventRecord(e0);
      st = table->FindOrInsert(keys.p, KeyDtype::kInt64, batch, 1, out.p);
      cudaEventRecord(e1);
      CUDA_OR_DIE(cudaEventSynchronize(e1));
      insert_s += Seconds(e0, e1);
      inserted += batch;
    }
    const bool filled = st.ok() && table->size() == inserted &&
                        table->capacity() == ((capacity + 15) / 16) * 16;
    report.Check(Str("bench_dim%d_fill", dim), filled,
                 st.message + Str("%" PRId64 " keys in %" PRId64 " slots", table->size(),
                                  table->capacity()));
    if (!filled) continue;
    const int rounds = 8, reps = 4;
    std::vector<std::unique_ptr<DeviceBuffer<int64_t>>> hits;
    for (int r = 0; r < rounds; ++r) {
      hits.emplace_back(new DeviceBuffer<int64_t>(batch));
      HitKeysKernel<<<(batch + 255) / 256, 256>>>(1000003ULL * r, inserted, batch,
                                                    hits.back()->p);
    }
    table->Find(hits[0]->p, KeyDtype::kInt64, batch, out.p);  // warm up
    cudaEventRecord(e0);
    for (int r = 0; r < rounds * reps; ++r) {
      table->Find(hits[r % rounds]->p, KeyDtype::kInt64, batch, out.p);
    }
    cudaEventRecord(e1);
    CUDA_OR_DIE(cudaEventSynchronize(e1));
    const double find_kvps = static_cast<double>(batch) * rounds * reps / Seconds(e0, e1);
    cudaEventRecord(e0);
    for (int r = 0; r < rounds * reps && st.ok(); ++r) {
      st = table->FindOrInsert(hits[r % rounds]->p, KeyDtype::kInt64, batch, 2, out.p);
    }
    cudaEventRecord(e1);
    CUDA_OR_DIE(cudaEventSynchronize(e1));
    const double hit_kvps = static_cast<double>(batch) * rounds * reps / Seconds(e0, e1);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    const double row_bytes = 2.0 * dim * sizeof(float);  // read the row, write it out
    if (dim == 64) {
      headline_find = find_kvps / 1e9;
      headline_pct = 100.0 * find_kvps * row_bytes / copy_bw;
    }
    report.Figure(Str("dim%d_find_bkvps", dim), find_kvps / 1e9);
    report.Figure(Str("dim%d_find_pct_of_copy_bw", dim), 100.0 * find_kvps * row_bytes / copy_bw);
    report.Figure(Str("dim%d_find_or_insert_hit_bkvps", dim), hit_kvps / 1e9);
    report.Figure(Str("dim%d_find_or_insert_new_bkvps", dim), inserted / insert_s / 1e9);
    report.Check(Str("bench_dim%d", dim), st.ok(), st.message);
  }
}

void WriteReport(const std::string& path, const std::string& device, double seconds) {
  FILE* f = fopen(path.c_str(), "w");
  if (f == nullptr) {
    fprintf(stderr, "ev_gpu_check: cannot write %s\n", path.c_str());
    exit(1);
  }
  fprintf(f, "{\n  \"device\": \"%s\",\n  \"seconds\": %.1f,\n  \"failures\": %d,\n",
          device.c_str(), seconds, report.failures);
  fprintf(f, "  \"figures\": {");
  for (size_t i = 0; i < report.figures.size(); ++i) {
    fprintf(f, "%s\n    %s", i ? "," : "", report.figures[i].c_str());
  }
  fprintf(f, "\n  },\n  \"checks\": [");
  for (size_t i = 0; i < report.checks.size(); ++i) {
    fprintf(f, "%s\n    %s", i ? "," : "", report.checks[i].c_str());
  }
  fprintf(f, "\n  ]\n}\n");
  fclose(f);
}

}  // namespace
}  // namespace gpu
}  // namespace graphopt

int main(int argc, char** argv) {
  using namespace graphopt::gpu;
  bool quick = false, bench = true;
  std::string out = "gpu_check.json";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a == "--no-bench") bench = false;
    else if (a == "--out" && i + 1 < argc) out = argv[++i];
    else {
      fprintf(stderr, "usage: ev_gpu_check [--quick] [--no-bench] [--out FILE]\n");
      return 2;
    }
  }
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    fprintf(stderr, "ev_gpu_check: no CUDA device (%s); run it on a machine with a GPU\n",
            e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    return 1;
  }
  cudaDeviceProp prop;
  CUDA_OR_DIE(cudaGetDeviceProperties(&prop, 0));
  const std::string device = Str("%s, sm_%d%d, %.1f GiB", prop.name, prop.major, prop.minor,
                                 prop.totalGlobalMem / 1073741824.0);
  printf("ev_gpu_check on %s%s\n", device.c_str(), quick ? " (quick)" : "");
  const auto start = std::chrono::steady_clock::now();

  CheckInitializerRows(quick ? 4096 : 1 << 20);
  CheckConcurrentInsert(quick ? 20000 : 1 << 20);
  // Table against reference: each optimizer; dims with and without float4 rows; int32
  // keys; growth from a tiny index; load factors 0.5-0.9 (the large ones with > 1e7 keys).
  std::vector<Case> cases;
  const int64_t small = quick ? 1 << 12 : 1 << 16, small_batch = quick ? 512 : 4096;
  const std::pair<Optimizer, const char*> optimizers[] = {
      {Optimizer::kNone, "none"}, {Optimizer::kSgd, "sgd"}, {Optimizer::kAdagrad, "adagrad"},
      {Optimizer::kAdam, "adam"}, {Optimizer::kFtrl, "ftrl"}};
  // --quick (under the sanitizers, which slow every launch): one float4 dim, one odd dim.
  const std::vector<int> dims = quick ? std::vector<int>{8, 13} : std::vector<int>{8, 13, 64, 128};
  for (const auto& [optimizer, name] : optimizers) {
    for (int dim : dims) {
      Case c;
      c.name = Str("%s_dim%d", name, dim);
      c.dim = dim, c.optimizer = optimizer, c.capacity = small, c.batch = small_batch;
      cases.push_back(c);
    }
  }
  Case int32_keys;
  int32_keys.name = "int32_keys", int32_keys.dtype = KeyDtype::kInt32;
  int32_keys.optimizer = Optimizer::kAdagrad;
  int32_keys.capacity = small, int32_keys.batch = small_batch;
  cases.push_back(int32_keys);
  Case growth;
  growth.name = "growth", growth.capacity = 64, growth.batch = small_batch;
  growth.load = (quick ? 5000.0 : 400000.0) / 64, growth.max_load = 0.9f;
  cases.push_back(growth);
  for (double load : {0.5, 0.7, 0.9}) {
    Case c;
    c.name = Str("load%.1f", load);
    c.capacity = quick ? 1 << 14 : 1 << 24;  // 16.8M slots: 8.4M to 15.1M keys
    c.batch = quick ? 1024 : 1 << 20;
    c.load = load;
    cases.push_back(c);
  }
  for (const Case& c : cases) TableCheck(c).Run();
  CheckErrors(quick);
  if (bench && !quick) {
    const double copy_bw = CopyBandwidth();
    report.Figure("copy_bandwidth_gbps", copy_bw / 1e9);
    // HierarchicalKV's published A100 find (1.98 B-KV/s at dim 64, pure HBM) scaled by peak
    // memory bandwidth, this device's against the A100 80GB SXM's 2039 GB/s.
    int clock_khz = 0, bus_bits = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0);
    const double peak_bw = 2.0 * clock_khz * 1e3 * bus_bits / 8;
    const double hkv_target = peak_bw > 0 ? 1.98 * peak_bw / 2039e9 : 0;
    report.Figure("peak_bandwidth_gbps", peak_bw / 1e9);
    report.Figure("hkv_a100_scaled_find_bkvps", hkv_target);
    Bench(int64_t{128} << 20, 0.75, 1 << 20, copy_bw);
    printf("headline: find at dim 64 %.3f B-KV/s = %.1f%% of the D2D copy bandwidth (target "
           ">= 60%%), %.2fx HierarchicalKV's A100 figure scaled by bandwidth (%.2f B-KV/s)\n",
           headline_find, headline_pct, hkv_target > 0 ? headline_find / hkv_target : 0.0,
           hkv_target);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WriteReport(out, device, seconds);
  printf("%s: %d failed check(s), %.1f s; report in %s\n", report.failures ? "FAIL" : "OK",
         report.failures, seconds, out.c_str());
  return report.failures ? 1 : 0;
}
