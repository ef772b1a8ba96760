// The NCCL process group. Compiled only when libtorch has CUDA and NCCL
// headers of the version it was built with are found (see build.rs).
#include "c10d_shim.h"
#include "c10d_shim_internal.h"

#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

extern "C" char* lmm_dist_group_new_nccl(lmm_dist_store* store,
                                         const char* prefix, int rank,
                                         int world_size, int64_t timeout_ms,
                                         int device_index,
                                         lmm_dist_group** out) {
  return lmm_dist_guard([&] {
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix),
                                                           store->store);
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        prefixed, rank, world_size, opts);
    // A bound device lets barrier() and the communicator set-up use this
    // rank's GPU instead of guessing one from the rank number.
    nccl->setBoundDeviceId(
        at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)));
    c10::intrusive_ptr<c10d::Backend> backend = nccl;
    *out = new lmm_dist_group{backend};
  });
}
