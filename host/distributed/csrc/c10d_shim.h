// C interface between the Rust crate and PyTorch's c10d (process groups,
// TCPStore). Every function that can fail returns NULL on success or a
// malloc'd message (free it with lmm_dist_free_error); results come back
// through out-parameters. Tensors are tch's handles, i.e. `at::Tensor*`.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmm_dist_store lmm_dist_store;
typedef struct lmm_dist_group lmm_dist_group;
typedef struct lmm_dist_work lmm_dist_work;
typedef void* lmm_tensor;

void lmm_dist_free_error(char* error);

// TCPStore: the server (is_server != 0) listens on `port`; clients connect to
// host:port, retrying until `timeout_ms`. `port_out` receives the port the
// store actually uses (useful with port 0 on the server).
char* lmm_dist_store_new(const char* host, uint16_t port, int is_server,
                         int64_t timeout_ms, lmm_dist_store** out,
                         uint16_t* port_out);
void lmm_dist_store_free(lmm_dist_store* store);
char* lmm_dist_store_set(lmm_dist_store* store, const char* key,
                         const uint8_t* value, uint64_t len);
// The value is malloc'd; free it with lmm_dist_free_bytes.
char* lmm_dist_store_get(lmm_dist_store* store, const char* key,
                         uint8_t** value, uint64_t* len);
void lmm_dist_free_bytes(uint8_t* value);
char* lmm_dist_store_add(lmm_dist_store* store, const char* key, int64_t delta,
                         int64_t* out);
char* lmm_dist_store_check(lmm_dist_store* store, const char* key,
                           int* present);
// `deleted` is 1 when the key was there.
char* lmm_dist_store_delete(lmm_dist_store* store, const char* key,
                            int* deleted);
// Every key the store holds (those of the process groups included).
char* lmm_dist_store_num_keys(lmm_dist_store* store, int64_t* out);
char* lmm_dist_store_wait(lmm_dist_store* store, const char* const* keys,
                          uint64_t n_keys, int64_t timeout_ms);

// Process groups over a store (keys are namespaced under `prefix`).
char* lmm_dist_group_new_gloo(lmm_dist_store* store, const char* prefix,
                              int rank, int world_size, int64_t timeout_ms,
                              lmm_dist_group** out);
// Only present when the crate was built with NCCL (cfg lmmhost_nccl).
char* lmm_dist_group_new_nccl(lmm_dist_store* store, const char* prefix,
                              int rank, int world_size, int64_t timeout_ms,
                              int device_index, lmm_dist_group** out);
void lmm_dist_group_free(lmm_dist_group* group);

// Reduce operations, as c10d::ReduceOp numbers them.
enum { LMM_DIST_SUM = 0, LMM_DIST_AVG = 1, LMM_DIST_MIN = 3, LMM_DIST_MAX = 4 };

// Collectives start asynchronously and return a work handle.
char* lmm_dist_all_reduce(lmm_dist_group* group, lmm_tensor tensor, int op,
                          lmm_dist_work** out);
char* lmm_dist_broadcast(lmm_dist_group* group, lmm_tensor tensor, int root,
                         lmm_dist_work** out);
char* lmm_dist_all_gather(lmm_dist_group* group, lmm_tensor output,
                          lmm_tensor input, lmm_dist_work** out);
char* lmm_dist_reduce_scatter(lmm_dist_group* group, lmm_tensor output,
                              lmm_tensor input, int op, lmm_dist_work** out);
char* lmm_dist_barrier(lmm_dist_group* group, lmm_dist_work** out);

// Blocks until the collective is done (for CUDA tensors: until the current
// stream is ordered after it) or `timeout_ms` passes (<= 0: the group's).
char* lmm_dist_work_wait(lmm_dist_work* work, int64_t timeout_ms);
void lmm_dist_work_free(lmm_dist_work* work);

// Called with a new `at::Tensor*` (the callee owns it) holding a parameter's
// gradient; it must not throw.
typedef void (*lmm_grad_hook_fn)(void* context, int64_t index, lmm_tensor grad);

// Hands `param`'s gradient to `callback(context, index, grad)` whenever a
// backward pass computes it; the backward itself then gets zeros (no
// memory) for it. Add and remove hooks only while no backward runs.
char* lmm_dist_grad_hook_add(lmm_tensor param, lmm_grad_hook_fn callback,
                             void* context, int64_t index, uint32_t* handle);
char* lmm_dist_grad_hook_remove(lmm_tensor param, uint32_t handle);

#ifdef __cplusplus
}
#endif
