//! Ring set-up and the io_uring half of the capability probe.

use std::time::Duration;

use io_uring::{IoUring, Probe, opcode};

use crate::driver::probe::{RingFlags, RingSetup};

/// Opcodes the engine issues, with the kernel that added each: exactly those the backend
/// submits (the test `probed_opcodes_are_the_submitted_ones` reads the backend's source).
const OPCODES: &[(&str, u8)] = &[
    ("ACCEPT (5.5; multishot 5.19)", opcode::Accept::CODE),
    ("CONNECT (5.5)", opcode::Connect::CODE),
    ("RECV (5.6)", opcode::Recv::CODE),
    ("SEND (5.6)", opcode::Send::CODE),
    ("SENDMSG (5.3)", opcode::SendMsg::CODE),
    ("READ (5.6)", opcode::Read::CODE),
    ("SPLICE (5.7)", opcode::Splice::CODE),
    ("RECVMSG (5.3; multishot 6.0)", opcode::RecvMsg::CODE),
    ("ASYNC_CANCEL (5.5)", opcode::AsyncCancel::CODE),
    ("POLL_ADD (5.1)", opcode::PollAdd::CODE),
    ("TIMEOUT (5.4)", opcode::Timeout::CODE),
];

/// Opcodes the engine uses when present and replaces when not.
const OPTIONAL_OPCODES: &[(&str, u8)] = &[(
    "MSG_RING (5.18; cross-core wake-ups, eventfd otherwise)",
    opcode::MsgRingData::CODE,
)];

/// What the probe learned from a test ring.
pub(crate) struct RingProbe {
    pub(crate) flags: RingFlags,
    /// Every opcode the engine uses (required and optional) and whether the kernel has it.
    pub(crate) opcodes: Vec<(&'static str, bool)>,
    /// Required opcodes the kernel lacks.
    pub(crate) missing: Vec<&'static str>,
    pub(crate) msg_ring: bool,
    /// A wait may gather completions for a while (IORING_FEAT_MIN_TIMEOUT with EXT_ARG, 6.12).
    pub(crate) min_wait: bool,
}

/// Creates a test ring of `entries` with the best flags the kernel accepts and probes opcodes.
pub(crate) fn probe_ring(entries: u32, sqpoll: bool) -> std::io::Result<RingProbe> {
    let (ring, flags) = try_setup(entries, sqpoll)?;
    let mut probe = Probe::new();
    let probed = ring.submitter().register_probe(&mut probe).is_ok();
    let has = |code| probed && probe.is_supported(code);
    let mut opcodes: Vec<(&'static str, bool)> = OPCODES
        .iter()
        .map(|&(name, code)| (name, has(code)))
        .collect();
    let missing = opcodes
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    opcodes.extend(
        OPTIONAL_OPCODES
            .iter()
            .map(|&(name, code)| (name, has(code))),
    );
    Ok(RingProbe {
        flags,
        opcodes,
        missing,
        msg_ring: has(opcode::MsgRingData::CODE),
        min_wait: ring.params().is_feature_min_timeout() && ring.params().is_feature_ext_arg(),
    })
}

/// Creates a ring with the best flags the kernel accepts, dropping one at a time on EINVAL.
fn try_setup(entries: u32, sqpoll: bool) -> std::io::Result<(IoUring, RingFlags)> {
    let best = RingFlags {
        single_issuer: true,
        defer_taskrun: !sqpoll,
        coop_taskrun: true,
        submit_all: true,
        sqpoll,
    };
    let mut ladder = vec![best];
    let mut f = best;
    f.defer_taskrun = false;
    ladder.push(f);
    f.single_issuer = false;
    ladder.push(f);
    f.submit_all = false;
    ladder.push(f);
    f.coop_taskrun = false;
    ladder.push(f);

    let mut last = std::io::Error::from_raw_os_error(libc::EINVAL);
    for flags in ladder {
        let setup = RingSetup {
            requested_entries: entries,
            entries,
            flags,
            fit: String::new(),
        };
        let idle = sqpoll.then_some(std::time::Duration::from_millis(1));
        match build_ring(&setup, idle) {
            Ok(ring) => return Ok((ring, flags)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Builds a ring with the flags the probe settled on.
pub(crate) fn build_ring(
    setup: &RingSetup,
    sqpoll_idle: Option<Duration>,
) -> std::io::Result<IoUring> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize(setup.entries * 2);
    if setup.flags.single_issuer {
        // 6.0: only this thread submits; lets the kernel skip locking.
        builder.setup_single_issuer();
    }
    if setup.flags.defer_taskrun {
        // 6.1: completions run when we ask (enter with GETEVENTS), not by interrupting us.
        builder.setup_defer_taskrun();
    }
    if setup.flags.coop_taskrun {
        // 5.19: no IPI to interrupt the thread when a completion is ready.
        builder.setup_coop_taskrun();
    }
    if setup.flags.submit_all {
        // 5.18: keep submitting the batch when one SQE fails.
        builder.setup_submit_all();
    }
    if let Some(idle) = sqpoll_idle {
        // 5.11 without privileges: a kernel thread polls the SQ (burns a core; opt-in only).
        builder.setup_sqpoll(idle.as_millis().min(u32::MAX as u128) as u32);
    }
    builder.build(setup.entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The io_uring backend's sources: every SQE it builds is written in one of them.
    const BACKEND: &[&str] = &[
        include_str!("mod.rs"),
        include_str!("op.rs"),
        include_str!("bufring.rs"),
    ];

    /// The opcode of each SQE builder the backend may name; a builder missing here fails the
    /// test, so a new op cannot skip the probe.
    fn code_of(builder: &str) -> u8 {
        match builder {
            "Accept" | "AcceptMulti" => opcode::Accept::CODE,
            "Connect" => opcode::Connect::CODE,
            "Recv" | "RecvMulti" => opcode::Recv::CODE,
            "Send" => opcode::Send::CODE,
            "SendMsg" => opcode::SendMsg::CODE,
            "RecvMsg" | "RecvMsgMulti" => opcode::RecvMsg::CODE,
            "Read" => opcode::Read::CODE,
            "Splice" => opcode::Splice::CODE,
            "PollAdd" => opcode::PollAdd::CODE,
            "AsyncCancel" => opcode::AsyncCancel::CODE,
            "Timeout" => opcode::Timeout::CODE,
            "LinkTimeout" => opcode::LinkTimeout::CODE,
            "MsgRingData" => opcode::MsgRingData::CODE,
            "SendZc" => opcode::SendZc::CODE,
            other => panic!("opcode::{other} is submitted but unknown to this test and the probe"),
        }
    }

    #[test]
    fn probed_opcodes_are_the_submitted_ones() {
        let mut submitted: Vec<u8> = BACKEND
            .iter()
            .flat_map(|src| src.split("opcode::").skip(1))
            .filter_map(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_alphanumeric).collect();
                rest[name.len()..].starts_with("::new").then(|| code_of(&name))
            })
            .collect();
        submitted.sort_unstable();
        submitted.dedup();
        let mut probed: Vec<u8> = OPCODES
            .iter()
            .chain(OPTIONAL_OPCODES)
            .map(|&(_, code)| code)
            .collect();
        probed.sort_unstable();
        let name = |c: &u8| {
            OPCODES
                .iter()
                .chain(OPTIONAL_OPCODES)
                .find(|(_, code)| code == c)
                .map_or(format!("opcode {c}"), |(n, _)| (*n).to_string())
        };
        let unprobed: Vec<_> = submitted.iter().filter(|c| !probed.contains(c)).collect();
        let unused: Vec<_> = probed
            .iter()
            .filter(|c| !submitted.contains(c))
            .map(name)
            .collect();
        assert!(unprobed.is_empty(), "submitted but not probed: {unprobed:?}");
        assert!(unused.is_empty(), "probed but never submitted: {unused:?}");
    }
}

#[cfg(test)]
mod flag_tests {
    /// The portable completion flags are the kernel's.
    #[test]
    fn completion_flags_match_the_kernel() {
        use io_uring::cqueue;
        assert!(cqueue::more(crate::driver::CQE_F_MORE));
        assert!(!cqueue::more(!crate::driver::CQE_F_MORE));
        let with_buffer = crate::driver::CQE_F_BUFFER | (7 << 16);
        assert_eq!(cqueue::buffer_select(with_buffer), Some(7));
        assert_eq!(crate::driver::buffer_id(with_buffer), Some(7));
    }
}
