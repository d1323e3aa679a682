//! CPU affinity and the CPUs this process may run on (Linux; elsewhere pinning is skipped).

use crate::error::Result;

cfg_select! {
    target_os = "linux" => {
        pub(crate) use linux::{allowed_cpus, pin_to};
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

#[cfg(not(target_os = "linux"))]
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
