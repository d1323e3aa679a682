//! CPU affinity and the CPUs this process may run on (Linux and Windows; elsewhere pinning is
//! skipped).

use crate::error::Result;

cfg_select! {
    target_os = "linux" => {
        pub(crate) use linux::{allowed_cpus, pin_to};
    }
    windows => {
        pub(crate) use windows::{allowed_cpus, pin_to};
    }
    _ => {
        pub(crate) use other::{allowed_cpus, pin_to};
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::Result;
    use crate::error::Error;

    /// The CPUs the calling thread may run on, in ascending order (respects `taskset`, cgroups).
    pub(crate) fn allowed_cpus() -> Result<Vec<usize>> {
        // SAFETY: `cpu_set_t` is plain data; all-zero is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable `cpu_set_t` of the size we pass.
        let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
        if rc != 0 {
            return Err(Error::last_os("sched_getaffinity"));
        }
        let cpus = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE, the bound `CPU_ISSET` requires.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect();
        Ok(cpus)
    }

    /// Pins the calling thread to one CPU.
    pub(crate) fn pin_to(cpu: usize) -> Result<()> {
        // SAFETY: all-zero is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` comes from `allowed_cpus`, so it is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: `set` is a valid `cpu_set_t` of the size we pass.
        let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            return Err(Error::last_os("sched_setaffinity"));
        }
        Ok(())
    }
}

#[cfg(windows)]
mod windows {
    use super::Result;
    use crate::error::Error;

    /// Every CPU the system reports; pinning below is what restricts a core.
    pub(crate) fn allowed_cpus() -> Result<Vec<usize>> {
        Ok((0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect())
    }

    /// Pins the calling thread to `cpu` (within the first processor group of 64 CPUs).
    pub(crate) fn pin_to(cpu: usize) -> Result<()> {
        use windows_sys::Win32::System::Threading::{GetCurrentThread, SetThreadAffinityMask};
        if cpu >= usize::BITS as usize {
            tracing::debug!(
                cpu,
                "CPU outside the first processor group; core not pinned"
            );
            return Ok(());
        }
        // SAFETY: sets the affinity of the calling thread through its pseudo-handle.
        let previous = unsafe { SetThreadAffinityMask(GetCurrentThread(), 1 << cpu) };
        if previous == 0 {
            return Err(Error::from_io(
                std::io::Error::last_os_error(),
                "SetThreadAffinityMask",
            ));
        }
        Ok(())
    }
}

#[cfg(not(any(target_os = "linux", windows)))]
mod other {
    use super::Result;

    /// Every CPU the system reports (no affinity API to ask).
    pub(crate) fn allowed_cpus() -> Result<Vec<usize>> {
        Ok((0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect())
    }

    /// No thread affinity here: the core runs unpinned.
    pub(crate) fn pin_to(cpu: usize) -> Result<()> {
        tracing::debug!(cpu, "no CPU affinity on this platform; core not pinned");
        Ok(())
    }
}
