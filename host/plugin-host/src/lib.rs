//! The sandboxed WebAssembly component host.
