//! c10d's TCPStore: the key-value server rank 0 hosts, through which ranks
//! find each other (and the process groups exchange their addresses).

use std::ffi::{c_int, CString};
use std::net::{TcpStream, ToSocketAddrs};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::ffi;

pub struct Store {
    raw: NonNull<ffi::RawStore>,
    host: String,
    port: u16,
}

// SAFETY: c10d's TCPStore serialises its requests on its own socket lock.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

fn c_string(what: &str, value: &str) -> Result<CString> {
    CString::new(value).map_err(|_| anyhow!("{what} {value:?} contains a NUL byte"))
}

pub(crate) fn millis(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// Polls `host:port` until something accepts a TCP connection or `deadline` passes.
fn wait_until_listening(host: &str, port: u16, deadline: Instant) -> Result<()> {
    const POLL: Duration = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match (host, port).to_socket_addrs() {
            Ok(addrs) => {
                let mut last = anyhow!("{host} resolves to no address");
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1))) {
                        Ok(_) => return Ok(()),
                        Err(e) => last = anyhow!("{addr}: {e}"),
                    }
                }
                last
            }
            Err(e) => anyhow!("cannot resolve {host}: {e}"),
        };
        if Instant::now() + POLL >= deadline {
            return Err(error.context(format!("nothing accepted a connection at {host}:{port}")));
        }
        std::thread::sleep(POLL);
    }
}

impl Store {
    /// Hosts the store (`is_server`, on `port`; 0 picks a free one) or
    /// connects to it, retrying until `timeout`. Errors carry c10d's message
    /// only; callers add which variables named the address.
    pub fn connect(host: &str, port: u16, is_server: bool, timeout: Duration) -> Result<Store> {
        let c_host = c_string("host", host)?;
        // c10d's client retries with a growing back-off that can overrun the
        // timeout by seconds; we wait for the port ourselves to keep the deadline.
        let timeout = if is_server {
            timeout
        } else {
            let deadline = Instant::now() + timeout;
            wait_until_listening(host, port, deadline)?;
            deadline.saturating_duration_since(Instant::now())
        };
        let mut raw = std::ptr::null_mut();
        let mut bound = 0u16;
        // SAFETY: valid C string and out-pointers; ownership of `raw` passes to us.
        ffi::check(unsafe {
            ffi::lmm_dist_store_new(
                c_host.as_ptr(),
                port,
                c_int::from(is_server),
                millis(timeout),
                &mut raw,
                &mut bound,
            )
        })
        .map_err(|e| anyhow!(e))?;
        let raw = NonNull::new(raw).ok_or_else(|| anyhow!("TCPStore returned no handle"))?;
        Ok(Store {
            raw,
            host: host.to_owned(),
            port: bound,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port the store listens on (the server's actual one when it was asked for 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn raw(&self) -> *mut ffi::RawStore {
        self.raw.as_ptr()
    }

    fn context(&self, what: &str, key: &str, error: String) -> anyhow::Error {
        anyhow!(
            "store {what} of key {key:?} at {}:{}: {error}",
            self.host,
            self.port
        )
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let c_key = c_string("store key", key)?;
        // SAFETY: valid handle, key and byte slice for the call's duration.
        ffi::check(unsafe {
            ffi::lmm_dist_store_set(
                self.raw(),
                c_key.as_ptr(),
                value.as_ptr(),
                value.len() as u64,
            )
        })
        .map_err(|e| self.context("set", key, e))
    }

    /// The value of `key`, waiting for it up to the store's timeout.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let c_key = c_string("store key", key)?;
        let mut ptr = std::ptr::null_mut();
        let mut len = 0u64;
        // SAFETY: valid handle and out-pointers; `ptr` is malloc'd by the shim.
        ffi::check(unsafe {
            ffi::lmm_dist_store_get(self.raw(), c_key.as_ptr(), &mut ptr, &mut len)
        })
        .map_err(|e| self.context("get", key, e))?;
        // SAFETY: `ptr` holds `len` bytes; freed right after the copy.
        let value = unsafe { std::slice::from_raw_parts(ptr, len as usize) }.to_vec();
        unsafe { ffi::lmm_dist_free_bytes(ptr) };
        Ok(value)
    }

    /// Adds `delta` to the integer at `key` (created as 0) and returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let c_key = c_string("store key", key)?;
        let mut out = 0i64;
        // SAFETY: valid handle, key and out-pointer.
        ffi::check(unsafe { ffi::lmm_dist_store_add(self.raw(), c_key.as_ptr(), delta, &mut out) })
            .map_err(|e| self.context("add", key, e))?;
        Ok(out)
    }

    /// Whether `key` is set, without waiting.
    pub fn check(&self, key: &str) -> Result<bool> {
        let c_key = c_string("store key", key)?;
        let mut present: c_int = 0;
        // SAFETY: valid handle, key and out-pointer.
        ffi::check(unsafe { ffi::lmm_dist_store_check(self.raw(), c_key.as_ptr(), &mut present) })
            .map_err(|e| self.context("check", key, e))?;
        Ok(present != 0)
    }

    /// Removes `key`; whether it was there.
    pub fn delete_key(&self, key: &str) -> Result<bool> {
        let c_key = c_string("store key", key)?;
        let mut deleted: c_int = 0;
        // SAFETY: valid handle, key and out-pointer.
        ffi::check(unsafe { ffi::lmm_dist_store_delete(self.raw(), c_key.as_ptr(), &mut deleted) })
            .map_err(|e| self.context("delete", key, e))?;
        Ok(deleted != 0)
    }

    /// How many keys the store holds, those of every user of it included
    /// (the process groups', torchrun's agent's).
    pub fn num_keys(&self) -> Result<i64> {
        let mut out = 0i64;
        // SAFETY: valid handle and out-pointer.
        ffi::check(unsafe { ffi::lmm_dist_store_num_keys(self.raw(), &mut out) })
            .map_err(|e| anyhow!("store key count at {}:{}: {e}", self.host, self.port))?;
        Ok(out)
    }

    /// Waits until every key is set, or fails after `timeout`.
    pub fn wait(&self, keys: &[String], timeout: Duration) -> Result<()> {
        let c_keys = keys
            .iter()
            .map(|k| c_string("store key", k))
            .collect::<Result<Vec<_>>>()?;
        let ptrs: Vec<_> = c_keys.iter().map(|k| k.as_ptr()).collect();
        // SAFETY: `ptrs` points into `c_keys`, alive for the call.
        ffi::check(unsafe {
            ffi::lmm_dist_store_wait(
                self.raw(),
                ptrs.as_ptr(),
                ptrs.len() as u64,
                millis(timeout),
            )
        })
        .map_err(|e| {
            anyhow!(
                "store wait for {} keys at {}:{}: {e}",
                keys.len(),
                self.host,
                self.port
            )
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the handle came from lmm_dist_store_new and is freed once.
        unsafe { ffi::lmm_dist_store_free(self.raw.as_ptr()) }
    }
}
