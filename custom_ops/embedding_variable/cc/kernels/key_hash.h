// The hash of a key: the murmur3 fmix64 finalizer. One definition for the CPU table (shard
// and home slot), the CUDA table (home bucket) and parameter-server routing
// (graphopt/distribute/sharded.py mirrors it in NumPy), so they can never drift apart.
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_KEY_HASH_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_KEY_HASH_H_

#include <cstdint>

#include "embedding_variable/cc/kernels/host_device.h"

namespace graphopt {

GRAPHOPT_HOST_DEVICE inline uint64_t HashKey(int64_t key) {
  uint64_t h = static_cast<uint64_t>(key);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

}  // namespace graphopt

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_KEY_HASH_H_
