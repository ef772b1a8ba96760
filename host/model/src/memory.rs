//! Peak memory of the running process: resident set size on the CPU
//! (`VmHWM`, Linux), the caching allocator's peak on a CUDA device (read
//! through a small C++ shim over libtorch's `c10::DeviceAllocator`).

use std::ffi::{c_char, c_int, CStr};

use tch::Device;

extern "C" {
    fn lmmhost_cuda_peak_allocated(
        device: c_int,
        out: *mut i64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn lmmhost_cuda_reset_peak(device: c_int, err: *mut c_char, err_len: usize) -> c_int;
}

/// Peak resident set size of this process in bytes (`VmHWM` of
/// /proc/self/status); `None` where that file does not exist.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// Resident set size of this process in bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

fn status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Every block over 64 KiB gets its own mapping, returned to the OS when
/// freed (a fixed threshold: glibc's sliding one would serve tensors from a
/// heap it keeps), so the resident size follows live memory. For memory
/// probes, each its process's only test, before any tensor exists.
pub fn rss_follows_live_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: changes an allocator parameter; the caller runs it before
        // any tensor exists.
        assert_eq!(unsafe { mallopt(M_MMAP_THRESHOLD, 64 << 10) }, 1);
    }
}

/// Runs the ignored test `test` of the running test binary alone in a child
/// process (so the peak it measures is its own) with `env` set, and returns
/// the numbers of the `key=value` words on the line it printed from
/// `marker` on (the harness may print its own words before it). Panics,
/// with the child's output, when the probe fails or prints no such line.
pub fn run_probe(
    test: &str,
    env: &[(&str, String)],
    marker: &str,
) -> std::collections::HashMap<String, f64> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(&exe)
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("the probe's child process starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find(marker).map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no probe line in: {stdout}"));
    line.split(' ')
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Peak bytes allocated by libtorch's CUDA caching allocator on `device`
/// since the process started or [`reset_cuda_peak`]; an error says why it
/// cannot be read (no CUDA in this libtorch, no GPU).
pub fn cuda_peak_allocated_bytes(device: usize) -> Result<u64, String> {
    let mut out = 0i64;
    let mut err = [0 as c_char; 512];
    // SAFETY: the shim writes at most err.len() bytes (NUL-terminated) into
    // `err` and one i64 into `out`, and catches every C++ exception.
    let rc = unsafe {
        lmmhost_cuda_peak_allocated(device as c_int, &mut out, err.as_mut_ptr(), err.len())
    };
    if rc == 0 {
        Ok(out.max(0) as u64)
    } else {
        // SAFETY: NUL-terminated by the shim.
        Err(unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }
}

/// Starts the CUDA peak over from the memory allocated now.
pub fn reset_cuda_peak(device: usize) -> Result<(), String> {
    let mut err = [0 as c_char; 512];
    // SAFETY: as in cuda_peak_allocated_bytes.
    let rc = unsafe { lmmhost_cuda_reset_peak(device as c_int, err.as_mut_ptr(), err.len()) };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: NUL-terminated by the shim.
        Err(unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }
}

/// The peak that matters for `device`: RSS on the CPU, the allocator's peak
/// on a GPU. `None` when it cannot be read.
pub fn peak_bytes(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(i) => cuda_peak_allocated_bytes(i).ok(),
        _ => peak_rss_bytes(),
    }
}

/// "1234 MiB" or "n/a".
pub fn format_mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".to_string(),
        |b| format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_peak_grows_with_a_large_allocation() {
        let before = peak_rss_bytes().expect("VmHWM");
        // Past the old peak whatever other tests of this process hold now.
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let rss_kib: i64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        let floats = (before as i64 - rss_kib * 1024).max(0) / 4 + 64 * 1024 * 1024;
        let t = tch::Tensor::ones([floats], (tch::Kind::Float, Device::Cpu));
        let after = peak_rss_bytes().expect("VmHWM");
        assert!(after >= before + 200 * 1024 * 1024, "{before} -> {after}");
        drop(t);
    }

    #[test]
    fn cuda_peak_reports_an_error_without_a_gpu() {
        if tch::Cuda::device_count() == 0 {
            let e = cuda_peak_allocated_bytes(0).unwrap_err();
            assert!(!e.is_empty());
            assert_eq!(peak_bytes(Device::Cuda(0)), None);
            assert_eq!(format_mib(None), "n/a");
        } else {
            let t = tch::Tensor::ones([1024, 1024], (tch::Kind::Float, Device::Cuda(0)));
            assert!(cuda_peak_allocated_bytes(0).unwrap() >= 4 * 1024 * 1024);
            drop(t);
        }
    }
}
