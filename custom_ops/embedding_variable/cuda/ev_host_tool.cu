// Host-only driver of the code the GPU table shares with the host (ev_gpu_common.h,
// row_initializer.h, ev_reference_table.h), for tests/ops/test_cuda_core.py: built by nvcc
// (or any C++17 compiler) and run without a GPU. Reads its input from stdin, writes floats
// as C99 hex literals (%a) so nothing is lost in the round trip.
//
//   rows     kind seed dim value minval maxval mean stddev n key...  -> n rows
//   hash     n key...                                                -> n hashes
//   probe    num_buckets attempts n key...                           -> n bucket sequences
//   apply    optimizer dim lr epsilon beta1 beta2 beta1_power beta2_power l1 l2 l2_shrinkage lr_power
//            slot_init0 slot_init1
//            num_entries (key row[stride])...
//            num_steps (n (key)... (grad[dim])...)...
//            -> every entry, by key: key row[stride]
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "embedding_variable/cuda/ev_gpu_common.h"
#include "embedding_variable/cuda/ev_reference_table.h"

namespace {

using graphopt::RowInitializer;
namespace gpu = graphopt::gpu;

int64_t ReadInt() {
  long long v;
  if (scanf("%lld", &v) != 1) {
    fprintf(stderr, "ev_host_tool: expected an integer on stdin\n");
    exit(2);
  }
  return v;
}

float ReadFloat() {
  char buffer[64];
  if (scanf("%63s", buffer) != 1) {
    fprintf(stderr, "ev_host_tool: expected a float on stdin\n");
    exit(2);
  }
  return strtof(buffer, nullptr);
}

void PrintRow(const float* row, int n) {
  for (int c = 0; c < n; ++c) printf(c ? " %a" : "%a", static_cast<double>(row[c]));
  printf("\n");
}

int Rows() {
  RowInitializer init;
  const int kind = static_cast<int>(ReadInt());
  init.kind = static_cast<RowInitializer::Kind>(kind);
  init.seed = ReadInt();
  const int dim = static_cast<int>(ReadInt());
  init.value = ReadFloat();
  init.minval = ReadFloat();
  init.maxval = ReadFloat();
  init.mean = ReadFloat();
  init.stddev = ReadFloat();
  const int64_t n = ReadInt();
  std::vector<float> row(dim);
  for (int64_t i = 0; i < n; ++i) {
    init.Fill(ReadInt(), dim, row.data());
    PrintRow(row.data(), dim);
  }
  return 0;
}

int Hash() {
  const int64_t n = ReadInt();
  for (int64_t i = 0; i < n; ++i) printf("%" PRIu64 "\n", graphopt::HashKey(ReadInt()));
  return 0;
}

int Probe() {
  const uint64_t num_buckets = ReadInt();
  const int64_t attempts = ReadInt();
  const int64_t n = ReadInt();
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t home = gpu::HomeBucket(graphopt::HashKey(ReadInt()), num_buckets);
    for (int64_t a = 0; a < attempts; ++a) {
      printf(a ? " %" PRIu64 : "%" PRIu64, gpu::ProbeBucket(home, a, num_buckets));
    }
    printf("\n");
  }
  return 0;
}

int Apply() {
  gpu::OptimizerParams p;
  p.kind = static_cast<gpu::Optimizer>(ReadInt());
  const int dim = static_cast<int>(ReadInt());
  p.lr = ReadFloat();
  p.epsilon = ReadFloat();
  p.beta1 = ReadFloat();
  p.beta2 = ReadFloat();
  p.beta1_power = ReadFloat();
  p.beta2_power = ReadFloat();
  p.l1 = ReadFloat();
  p.l2 = ReadFloat();
  p.l2_shrinkage = ReadFloat();
  p.lr_power = ReadFloat();
  float slot_init[2];
  slot_init[0] = ReadFloat();
  slot_init[1] = ReadFloat();
  RowInitializer zeros;
  zeros.kind = RowInitializer::Kind::kZeros;
  gpu::ReferenceTable table(dim, p.kind, slot_init, zeros, {});
  const int stride = table.stride();
  std::vector<float> row(stride);
  for (int64_t e = ReadInt(); e > 0; --e) {
    const int64_t key = ReadInt();
    for (float& v : row) v = ReadFloat();
    table.Put(key, row.data());
  }
  for (int64_t s = ReadInt(); s > 0; --s) {
    const int64_t n = ReadInt();
    std::vector<int64_t> keys(n);
    for (int64_t& k : keys) k = ReadInt();
    std::vector<float> grads(n * dim);
    for (float& g : grads) g = ReadFloat();
    table.Apply(p, keys.data(), n, grads.data());
  }
  std::vector<int64_t> keys;
  for (const auto& kv : table.entries()) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());
  for (int64_t key : keys) {
    printf("%lld ", static_cast<long long>(key));
    PrintRow(table.entries().at(key).row.data(), stride);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "rows") return Rows();
  if (command == "hash") return Hash();
  if (command == "probe") return Probe();
  if (command == "apply") return Apply();
  fprintf(stderr, "usage: ev_host_tool rows|hash|probe|apply < input\n");
  return 2;
}
