// What the shim's translation units share: the handle structs behind the C
// interface and the exception-to-message guard.
#pragma once

#include <exception>
#include <string>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

struct lmm_dist_store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct lmm_dist_group {
  c10::intrusive_ptr<c10d::Backend> backend;
};

struct lmm_dist_work {
  c10::intrusive_ptr<c10d::Work> work;
};

// A malloc'd copy of `message` (what crosses into Rust).
char* lmm_dist_error(const std::string& message);

// Runs `body`; an exception becomes its message (c10 errors without the C++
// backtrace, which names libtorch internals rather than the caller's call).
template <typename F>
char* lmm_dist_guard(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return lmm_dist_error(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return lmm_dist_error(e.what());
  } catch (...) {
    return lmm_dist_error("unknown C++ exception");
  }
}
