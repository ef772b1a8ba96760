// Gradient hooks on parameters: the backward pass calls back as soon as it
// has a parameter's whole gradient (before later layers' gradients exist),
// so that its bucket can be reduced while the backward goes on, as DDP's
// reducer does with its autograd hooks. tch exposes no hooks; these are
// libtorch's own tensor hooks.
#include "c10d_shim.h"
#include "c10d_shim_internal.h"

#include <ATen/ATen.h>

extern "C" {

char* lmm_dist_grad_hook_add(lmm_tensor param, lmm_grad_hook_fn callback,
                             void* context, int64_t index,
                             uint32_t* handle) {
  return lmm_dist_guard([&] {
    at::Tensor& p = *static_cast<at::Tensor*>(param);
    TORCH_CHECK(p.requires_grad(),
                "a gradient hook on a tensor that does not require grad");
    // The gradient goes to the callback; the backward pass gets zeros that
    // take no memory (an expanded scalar) in its place, so it is not held
    // twice. For a leaf, this hook runs once per backward with the
    // gradient summed over every use of the parameter.
    *handle = p.register_hook(
        [callback, context, index](const at::Tensor& grad) -> at::Tensor {
          callback(context, index, new at::Tensor(grad));
          return at::zeros({}, grad.options()).expand(grad.sizes());
        });
  });
}

char* lmm_dist_grad_hook_remove(lmm_tensor param, uint32_t handle) {
  return lmm_dist_guard(
      [&] { static_cast<at::Tensor*>(param)->remove_hook(handle); });
}

}  // extern "C"
