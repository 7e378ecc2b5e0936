// C API of the kernel emulator library (libdeepkernels_emu.so), used by the C# EmulatorDriver.
// Every function returns a CUresult-style code (0 success, 1 invalid value, 2 out of memory,
// 400 invalid handle, 500 not found, 700 illegal address, 716 misaligned address, 719 launch
// failed); the message of the last failure on the calling thread is dkemu_last_error().
#pragma once
#include <stdint.h>

#if defined(_WIN32)
#define DKEMU_API __declspec(dllexport)
#else
#define DKEMU_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dkemu_device_properties {
  char name[64];
  int32_t cc_major;
  int32_t cc_minor;
  int32_t multiprocessor_count;
  int32_t max_shared_per_block_optin;
  int32_t l2_bytes;
  int32_t max_threads_per_block;
  uint64_t total_memory;
} dkemu_device_properties;

typedef struct dkemu_stats {
  uint64_t launches;
  uint64_t ctas;
  uint64_t threads;
  uint64_t fiber_switches;
  uint64_t bytes_in_use;
  uint64_t peak_bytes;
  uint64_t allocations;
  uint64_t live_allocations;
} dkemu_stats;

enum { DKEMU_COPY_HOST_TO_DEVICE = 1, DKEMU_COPY_DEVICE_TO_HOST = 2, DKEMU_COPY_DEVICE_TO_DEVICE = 3 };

DKEMU_API int dkemu_version(void);
DKEMU_API const char* dkemu_last_error(void);
DKEMU_API int dkemu_device_get_properties(dkemu_device_properties* props);

DKEMU_API int dkemu_kernel_count(void);
DKEMU_API const char* dkemu_kernel_name(int index);
DKEMU_API int dkemu_get_function(const char* name, void** function);
DKEMU_API int dkemu_function_param_count(void* function, int* count);
DKEMU_API int dkemu_function_param(void* function, int index, const char** name, const char** type, uint64_t* size);
DKEMU_API int dkemu_func_get_attribute(void* function, int attribute, int* value);
DKEMU_API int dkemu_func_set_attribute(void* function, int attribute, int value);

// Runs the whole grid before returning. `arg_sizes`/`arg_count` (optional: NULL / -1) let the
// caller's view of the parameters be checked against the kernel's signature.
DKEMU_API int dkemu_launch(void* function, uint32_t grid_x, uint32_t grid_y, uint32_t grid_z, uint32_t block_x, uint32_t block_y,
                           uint32_t block_z, uint32_t dynamic_shared_bytes, void** args, const uint64_t* arg_sizes, int32_t arg_count);

DKEMU_API int dkemu_malloc(uint64_t bytes, uint64_t* pointer);
DKEMU_API int dkemu_free(uint64_t pointer);
DKEMU_API int dkemu_memcpy(uint64_t destination, uint64_t source, uint64_t bytes, int32_t kind);
DKEMU_API int dkemu_memset(uint64_t destination, int32_t value, uint64_t bytes);
DKEMU_API int dkemu_malloc_host(uint64_t bytes, void** pointer);
DKEMU_API int dkemu_free_host(void* pointer);
// Checks every allocation's guard bytes; reports the first one written out of bounds.
DKEMU_API int dkemu_check_memory(void);
DKEMU_API void dkemu_get_stats(dkemu_stats* stats);
// Encodes a tiled tensor map for the TMA twins into the 128 bytes at `tensor_map` (the
// emulator's cuTensorMapEncodeTiled): dims in elements innermost first, strides in bytes for
// dims 1..rank-1, box extents, swizzle 0/32/64/128 bytes.
DKEMU_API int dkemu_tensor_map_encode(void* tensor_map, uint32_t elem_bytes, uint32_t rank, uint64_t global, const uint64_t* dims,
                                      const uint64_t* strides, const uint32_t* box, uint32_t swizzle);

#ifdef __cplusplus
}
#endif
