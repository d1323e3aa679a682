//! The start-up capability report and the choice of driver.
//!
//! Before any core starts, the runtime probes the host once: kernel version, whether io_uring is
//! allowed (the `kernel.io_uring_disabled` sysctl, seccomp filters that answer EPERM or ENOSYS as
//! Docker's default profile does), which ring flags the kernel accepts, each opcode the engine
//! uses, and RLIMIT_MEMLOCK with how the ring size was fitted under it. The driver is chosen from
//! that report; the report is logged once and kept (`Runtime::capabilities()`).

use std::fmt;

use super::DriverConfig;
use crate::sys::probe as host;

/// Which backend runs the cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring (Linux).
    Uring,
    /// The portable readiness reactor (epoll, kqueue, IOCP).
    Compat,
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring where it works, compat otherwise.
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// The compat reactor even where io_uring works.
    Compat,
}

impl DriverChoice {
    /// Parses `auto`, `uring` (or `io_uring`), `compat`.
    pub fn parse(s: &str) -> Option<DriverChoice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(DriverChoice::Auto),
            "uring" | "io_uring" | "io-uring" => Some(DriverChoice::Uring),
            "compat" => Some(DriverChoice::Compat),
            _ => None,
        }
    }
}

/// Whether io_uring can be used here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UringStatus {
    /// Rings can be created and every opcode the engine needs is present.
    Available,
    /// `kernel.io_uring_disabled` forbids it (value 2, or 1 for a process outside the group).
    DisabledBySysctl(u8),
    /// `io_uring_setup` answered EPERM: a seccomp filter (Docker's default) or the sysctl.
    Denied,
    /// `io_uring_setup` answered ENOSYS: the kernel has no io_uring, or seccomp hides it.
    NotImplemented,
    /// Not Linux: io_uring does not exist here, and compat is the platform's driver.
    NotLinux,
    /// The kernel has io_uring but lacks opcodes or features the engine needs.
    Incomplete(String),
    /// Ring creation failed for another reason (the OS error is quoted).
    SetupFailed(String),
}

/// Ring flags the kernel accepted, in the order they are dropped when it refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingFlags {
    /// IORING_SETUP_SINGLE_ISSUER (6.0).
    pub single_issuer: bool,
    /// IORING_SETUP_DEFER_TASKRUN (6.1; needs SINGLE_ISSUER, excludes SQPOLL).
    pub defer_taskrun: bool,
    /// IORING_SETUP_COOP_TASKRUN (5.19).
    pub coop_taskrun: bool,
    /// IORING_SETUP_SUBMIT_ALL (5.18).
    pub submit_all: bool,
    /// IORING_SETUP_SQPOLL (opt-in).
    pub sqpoll: bool,
}

/// How each core's ring is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingSetup {
    /// SQ entries asked for by the configuration.
    pub requested_entries: u32,
    /// SQ entries used (the CQ has twice as many).
    pub entries: u32,
    /// Flags the kernel accepted.
    pub flags: RingFlags,
    /// How the size was fitted under RLIMIT_MEMLOCK, in words.
    pub fit: String,
}

/// The start-up report.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// `uname -r`.
    pub kernel: String,
    /// `kernel.io_uring_disabled`, when the sysctl exists (6.6+).
    pub io_uring_disabled_sysctl: Option<u8>,
    /// Whether io_uring is usable.
    pub io_uring: UringStatus,
    /// Each opcode the engine uses and whether the kernel has it.
    pub opcodes: Vec<(&'static str, bool)>,
    /// `(soft, hard)` RLIMIT_MEMLOCK in bytes (`u64::MAX`: unlimited).
    pub memlock: (u64, u64),
    /// The ring set-up each core uses, when io_uring is chosen.
    pub ring: Option<RingSetup>,
    /// Whether cores wake each other with MSG_RING (else through eventfds).
    pub msg_ring: bool,
    /// Whether a wait can gather completions for a while before waking the core
    /// (`IORING_FEAT_MIN_TIMEOUT`, 6.12): what [`crate::Builder::coalesce_wakeups`] needs.
    pub min_wait: bool,
    /// Kernel TLS offload: the `tls` ULP and the ciphers it takes, or why there is none
    /// ([`net::ktls::support`](crate::net::ktls), Linux).
    pub kernel_tls: String,
    /// The driver the runtime runs.
    pub driver: DriverKind,
    /// Why that driver, in words.
    pub reason: String,
}

/// Multishot accept and COOP_TASKRUN need this kernel.
const MIN_KERNEL: (u32, u32) = (5, 19);
/// From this kernel on, ring memory is charged to the memory cgroup, not RLIMIT_MEMLOCK.
const MEMCG_ACCOUNTING_KERNEL: (u32, u32) = (5, 12);
/// Rings are not shrunk below this many SQ entries to fit RLIMIT_MEMLOCK.
const MIN_ENTRIES: u32 = 64;

/// Probes the host and picks the driver for `config`.
pub(crate) fn probe(config: &DriverConfig) -> Capabilities {
    let kernel = host::kernel_release();
    let version = host::parse_version(&kernel);
    let sysctl = host::io_uring_disabled_sysctl();
    let memlock = host::memlock_limit();
    let (entries, fit) = fit_entries(config.ring_entries, version, memlock.0);

    let mut caps = Capabilities {
        kernel,
        io_uring_disabled_sysctl: sysctl,
        io_uring: UringStatus::Available,
        opcodes: Vec::new(),
        memlock,
        ring: None,
        msg_ring: false,
        min_wait: false,
        #[cfg(target_os = "linux")]
        kernel_tls: crate::net::ktls::support().to_string(),
        #[cfg(not(target_os = "linux"))]
        kernel_tls: "kernel TLS: Linux only; TLS runs in user space".into(),
        driver: DriverKind::Uring,
        reason: String::new(),
    };

    if config.driver == DriverChoice::Compat {
        caps.io_uring = UringStatus::SetupFailed("not probed: compat was forced".into());
        caps.driver = DriverKind::Compat;
        caps.reason = format!("compat forced by {}", config.driver_source);
        return caps;
    }

    match super::uring::probe_ring(entries, config.sqpoll_idle.is_some()) {
        Ok(ring) => {
            caps.opcodes = ring.opcodes;
            caps.msg_ring = ring.msg_ring;
            caps.min_wait = ring.min_wait;
            if version < MIN_KERNEL {
                caps.io_uring = UringStatus::Incomplete(format!(
                    "kernel {}.{} < {}.{} (multishot accept)",
                    version.0, version.1, MIN_KERNEL.0, MIN_KERNEL.1
                ));
            } else if !ring.missing.is_empty() {
                caps.io_uring =
                    UringStatus::Incomplete(format!("missing {}", ring.missing.join(", ")));
            }
            caps.ring = Some(RingSetup {
                requested_entries: config.ring_entries,
                entries,
                flags: ring.flags,
                fit,
            });
        }
        Err(err) => {
            caps.io_uring = match (err.raw_os_error(), sysctl) {
                (Some(libc::EPERM), Some(v @ 1..)) => UringStatus::DisabledBySysctl(v),
                (Some(libc::EPERM), _) => UringStatus::Denied,
                (Some(libc::ENOSYS), _) => UringStatus::NotImplemented,
                _ if !cfg!(target_os = "linux") => UringStatus::NotLinux,
                _ => UringStatus::SetupFailed(err.to_string()),
            };
        }
    }

    let usable = caps.io_uring == UringStatus::Available;
    match (config.driver, usable) {
        (_, true) => {
            caps.driver = DriverKind::Uring;
            caps.reason = "io_uring available".into();
        }
        (DriverChoice::Uring, false) => {
            caps.driver = DriverKind::Uring;
            caps.reason = format!(
                "io_uring forced by {} but unusable: {:?}",
                config.driver_source, caps.io_uring
            );
        }
        (_, false) => {
            caps.driver = DriverKind::Compat;
            caps.reason = format!("io_uring unusable ({:?}); falling back", caps.io_uring);
        }
    }
    caps
}

/// Ring memory for `entries` SQ entries and twice as many CQ entries, in bytes (SQEs, the SQ
/// index array, CQEs, and a page of headers).
fn ring_bytes(entries: u32) -> u64 {
    let e = u64::from(entries);
    e * 64 + e * 4 + 2 * e * 16 + 4096
}

/// Picks the SQ size: the configured one, halved until it fits RLIMIT_MEMLOCK on kernels that
/// still charge ring memory to it.
fn fit_entries(requested: u32, version: (u32, u32), memlock_soft: u64) -> (u32, String) {
    let requested = requested.clamp(MIN_ENTRIES, 32768).next_power_of_two();
    if version >= MEMCG_ACCOUNTING_KERNEL {
        return (
            requested,
            format!(
                "{requested} entries ({} KiB); kernel >= 5.12 charges rings to the memory cgroup, \
                 RLIMIT_MEMLOCK does not apply",
                ring_bytes(requested) / 1024
            ),
        );
    }
    let mut entries = requested;
    while entries > MIN_ENTRIES && ring_bytes(entries) > memlock_soft {
        entries /= 2;
    }
    (
        entries,
        format!(
            "{entries} of {requested} entries ({} KiB) to fit RLIMIT_MEMLOCK {} KiB",
            ring_bytes(entries) / 1024,
            memlock_soft / 1024
        ),
    )
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {}", self.kernel)?;
        match self.io_uring_disabled_sysctl {
            Some(v) => writeln!(f, "kernel.io_uring_disabled = {v}")?,
            None => writeln!(f, "kernel.io_uring_disabled: absent")?,
        }
        writeln!(f, "io_uring: {:?}", self.io_uring)?;
        for (name, ok) in &self.opcodes {
            writeln!(f, "  {name}: {}", if *ok { "yes" } else { "NO" })?;
        }
        let show = |v: u64| {
            if v == u64::MAX {
                "unlimited".to_string()
            } else {
                format!("{} KiB", v / 1024)
            }
        };
        writeln!(
            f,
            "RLIMIT_MEMLOCK soft {} hard {}",
            show(self.memlock.0),
            show(self.memlock.1)
        )?;
        if let Some(ring) = &self.ring {
            writeln!(f, "ring: {}; flags {:?}", ring.fit, ring.flags)?;
            writeln!(
                f,
                "min-wait (wake-up coalescing): {}",
                if self.min_wait { "yes" } else { "no" }
            )?;
        }
        writeln!(f, "{}", self.kernel_tls)?;
        write!(f, "driver: {:?} ({})", self.driver, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_fitting_halves_on_old_kernels_only() {
        let (e, _) = fit_entries(4096, (5, 10), 64 * 1024);
        assert!(e < 4096 && ring_bytes(e) <= 64 * 1024, "{e}");
        let (e, why) = fit_entries(4096, (6, 1), 64 * 1024);
        assert_eq!(e, 4096);
        assert!(why.contains("memory cgroup"));
        let (e, _) = fit_entries(4096, (5, 4), 1);
        assert_eq!(e, MIN_ENTRIES);
    }

    #[test]
    fn driver_choice_parses() {
        assert_eq!(DriverChoice::parse("io_uring"), Some(DriverChoice::Uring));
        assert_eq!(DriverChoice::parse("COMPAT"), Some(DriverChoice::Compat));
        assert_eq!(DriverChoice::parse("epoll?"), None);
    }
}
