//! Facts about the host that the capability report reads.

/// `uname -r`, e.g. `6.18.44`.
#[cfg(unix)]
pub(crate) fn kernel_release() -> String {
    // SAFETY: `utsname` is plain data; all-zero is a valid value to be overwritten.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable `utsname`.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::from("unknown");
    }
    // SAFETY: on success `release` holds a NUL-terminated string inside the array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

/// Windows has no `uname`; the capability report only needs a name.
#[cfg(windows)]
pub(crate) fn kernel_release() -> String {
    String::from("windows")
}

/// `(major, minor)` parsed from a release string; `(0, 0)` when it cannot be read.
pub(crate) fn parse_version(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// `kernel.io_uring_disabled` (6.6+): 0 enabled, 1 only for a privileged group, 2 disabled.
/// `None` when the sysctl does not exist (older kernels: always enabled).
pub(crate) fn io_uring_disabled_sysctl() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// `(soft, hard)` RLIMIT_MEMLOCK in bytes; `u64::MAX` means unlimited.
#[cfg(unix)]
pub(crate) fn memlock_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return (0, 0);
    }
    let conv = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v
        }
    };
    (conv(lim.rlim_cur), conv(lim.rlim_max))
}

/// No locked-memory limit applies to the compat driver's buffers on Windows.
#[cfg(windows)]
pub(crate) fn memlock_limit() -> (u64, u64) {
    (u64::MAX, u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing_tolerates_suffixes() {
        assert_eq!(parse_version("6.18.44-fc-v657"), (6, 18));
        assert_eq!(parse_version("5.4.0"), (5, 4));
        assert_eq!(parse_version("garbage"), (0, 0));
    }

    #[test]
    #[cfg(unix)]
    fn this_kernel_has_a_release() {
        assert_ne!(parse_version(&kernel_release()), (0, 0));
    }
}
