// GRAPHOPT_HOST_DEVICE: marks a function the CUDA table (custom_ops/embedding_variable/cuda/)
// compiles for the device too, so the CPU and the GPU compute it alike (key hash, initial rows).
#ifndef GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_HOST_DEVICE_H_
#define GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_HOST_DEVICE_H_

#ifdef __CUDACC__
#define GRAPHOPT_HOST_DEVICE __host__ __device__
#else
#define GRAPHOPT_HOST_DEVICE
#endif

#endif  // GRAPHOPT_EMBEDDING_VARIABLE_CC_KERNELS_HOST_DEVICE_H_
