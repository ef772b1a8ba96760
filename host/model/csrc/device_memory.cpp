// Peak memory of libtorch's device caching allocator, through the generic
// c10::DeviceAllocator interface (no CUDA headers needed, so this compiles
// against CPU-only libtorch too; there the allocator is simply absent).

#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>
#include <cstring>
#include <exception>

namespace {

void copy_message(const char* what, char* err, std::size_t err_len) {
    if (err == nullptr || err_len == 0) {
        return;
    }
    std::strncpy(err, what, err_len - 1);
    err[err_len - 1] = '\0';
}

}  // namespace

// Runs `f`, turning any C++ exception into -1 and its message in `err`.
template <typename F>
int guarded(char* err, std::size_t err_len, F f) {
    try {
        f();
        return 0;
    } catch (const std::exception& e) {
        copy_message(e.what(), err, err_len);
    } catch (...) {
        copy_message("unknown C++ exception", err, err_len);
    }
    return -1;
}

extern "C" {

// Writes the peak allocated bytes since the start (or the last reset) of CUDA
// device `device` to `*out`; returns 0, or -1 with the reason in `err`.
int lmmhost_cuda_peak_allocated(int device, int64_t* out, char* err, std::size_t err_len) {
    return guarded(err, err_len, [&] {
        auto* alloc = c10::getDeviceAllocator(c10::DeviceType::CUDA);
        auto stats = alloc->getDeviceStats(static_cast<c10::DeviceIndex>(device));
        *out = stats.allocated_bytes[static_cast<std::size_t>(
                                         c10::CachingAllocator::StatType::AGGREGATE)]
                   .peak;
    });
}

int lmmhost_cuda_reset_peak(int device, char* err, std::size_t err_len) {
    return guarded(err, err_len, [&] {
        c10::getDeviceAllocator(c10::DeviceType::CUDA)
            ->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    });
}

}  // extern "C"
