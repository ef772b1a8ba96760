// The store, the Gloo process group and the collectives, on c10d as libtorch
// ships it. Nothing here moves data itself: every collective is c10d's.
#include "c10d_shim.h"
#include "c10d_shim_internal.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

char* lmm_dist_error(const std::string& message) {
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, message.c_str(), message.size() + 1);
  }
  return out;
}

extern "C" {

void lmm_dist_free_error(char* error) { std::free(error); }

void lmm_dist_free_bytes(uint8_t* value) { std::free(value); }

char* lmm_dist_store_new(const char* host, uint16_t port, int is_server,
                         int64_t timeout_ms, lmm_dist_store** out,
                         uint16_t* port_out) {
  return lmm_dist_guard([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    // The rank count is checked by the caller's own rendezvous, which can
    // name the mismatching variable; the store only serves keys.
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *port_out = store->getPort();
    *out = new lmm_dist_store{store};
  });
}

void lmm_dist_store_free(lmm_dist_store* store) { delete store; }

char* lmm_dist_store_set(lmm_dist_store* store, const char* key,
                         const uint8_t* value, uint64_t len) {
  return lmm_dist_guard([&] {
    store->store->set(std::string(key), std::vector<uint8_t>(value, value + len));
  });
}

char* lmm_dist_store_get(lmm_dist_store* store, const char* key,
                         uint8_t** value, uint64_t* len) {
  return lmm_dist_guard([&] {
    std::vector<uint8_t> got = store->store->get(std::string(key));
    *len = got.size();
    *value = static_cast<uint8_t*>(std::malloc(got.size() + 1));
    if (*value == nullptr) {
      throw std::bad_alloc();
    }
    std::memcpy(*value, got.data(), got.size());
  });
}

char* lmm_dist_store_add(lmm_dist_store* store, const char* key, int64_t delta,
                         int64_t* out) {
  return lmm_dist_guard(
      [&] { *out = store->store->add(std::string(key), delta); });
}

char* lmm_dist_store_check(lmm_dist_store* store, const char* key,
                           int* present) {
  return lmm_dist_guard([&] {
    *present = store->store->check({std::string(key)}) ? 1 : 0;
  });
}

char* lmm_dist_store_delete(lmm_dist_store* store, const char* key,
                            int* deleted) {
  return lmm_dist_guard([&] {
    *deleted = store->store->deleteKey(std::string(key)) ? 1 : 0;
  });
}

char* lmm_dist_store_num_keys(lmm_dist_store* store, int64_t* out) {
  return lmm_dist_guard([&] { *out = store->store->getNumKeys(); });
}

char* lmm_dist_store_wait(lmm_dist_store* store, const char* const* keys,
                          uint64_t n_keys, int64_t timeout_ms) {
  return lmm_dist_guard([&] {
    std::vector<std::string> names(keys, keys + n_keys);
    store->store->wait(names, std::chrono::milliseconds(timeout_ms));
  });
}

char* lmm_dist_group_new_gloo(lmm_dist_store* store, const char* prefix,
                              int rank, int world_size, int64_t timeout_ms,
                              lmm_dist_group** out) {
  return lmm_dist_guard([&] {
    auto opts = c10d::ProcessGroupGloo::Options::create(
        std::chrono::milliseconds(timeout_ms));
    // As torch.distributed does: one device per interface named in
    // GLOO_SOCKET_IFNAME (comma-separated), else the host's default one.
    const char* ifnames = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifnames != nullptr && ifnames[0] != '\0') {
      std::stringstream list(ifnames);
      std::string name;
      while (std::getline(list, name, ',')) {
        if (!name.empty()) {
          opts->devices.push_back(
              c10d::ProcessGroupGloo::createDeviceForInterface(name));
        }
      }
    }
    if (opts->devices.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix),
                                                           store->store);
    c10::intrusive_ptr<c10d::Backend> backend =
        c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world_size,
                                                    opts);
    *out = new lmm_dist_group{backend};
  });
}

void lmm_dist_group_free(lmm_dist_group* group) { delete group; }

static lmm_dist_work* wrap(c10::intrusive_ptr<c10d::Work> work) {
  return new lmm_dist_work{std::move(work)};
}

static at::Tensor& tensor_of(lmm_tensor t) {
  return *static_cast<at::Tensor*>(t);
}

char* lmm_dist_all_reduce(lmm_dist_group* group, lmm_tensor tensor, int op,
                          lmm_dist_work** out) {
  return lmm_dist_guard([&] {
    std::vector<at::Tensor> tensors{tensor_of(tensor)};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp(static_cast<c10d::ReduceOp::RedOpType>(op));
    *out = wrap(group->backend->allreduce(tensors, opts));
  });
}

char* lmm_dist_broadcast(lmm_dist_group* group, lmm_tensor tensor, int root,
                         lmm_dist_work** out) {
  return lmm_dist_guard([&] {
    std::vector<at::Tensor> tensors{tensor_of(tensor)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    *out = wrap(group->backend->broadcast(tensors, opts));
  });
}

char* lmm_dist_all_gather(lmm_dist_group* group, lmm_tensor output,
                          lmm_tensor input, lmm_dist_work** out) {
  return lmm_dist_guard([&] {
    *out = wrap(group->backend->_allgather_base(tensor_of(output),
                                                tensor_of(input)));
  });
}

char* lmm_dist_reduce_scatter(lmm_dist_group* group, lmm_tensor output,
                              lmm_tensor input, int op, lmm_dist_work** out) {
  return lmm_dist_guard([&] {
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = c10d::ReduceOp(static_cast<c10d::ReduceOp::RedOpType>(op));
    *out = wrap(group->backend->_reduce_scatter_base(tensor_of(output),
                                                     tensor_of(input), opts));
  });
}

char* lmm_dist_barrier(lmm_dist_group* group, lmm_dist_work** out) {
  return lmm_dist_guard([&] { *out = wrap(group->backend->barrier()); });
}

char* lmm_dist_work_wait(lmm_dist_work* work, int64_t timeout_ms) {
  return lmm_dist_guard([&] {
    auto timeout = timeout_ms > 0 ? std::chrono::milliseconds(timeout_ms)
                                  : std::chrono::milliseconds(0);
    work->work->wait(timeout);
  });
}

void lmm_dist_work_free(lmm_dist_work* work) { delete work; }

}  // extern "C"
