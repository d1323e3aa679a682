//! No io_uring on this platform: the backend's types exist but are uninhabited, so the driver
//! contract and the op lifecycle compile unchanged and the probe reports io_uring as missing.

use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::buf::pool::Pool;
use crate::driver::lifecycle::CqeResult;
use crate::driver::probe::{Capabilities, RingFlags};
use crate::driver::{OpCode, Orphan};
use crate::error::{Error, ErrorKind, Result};
use crate::driver::DriverConfig;
use crate::runtime::context::CoreShared;
use crate::stats::DriverStats;

/// A value that cannot exist.
pub(crate) enum Never {}

/// The completion-mode half of an op: nothing to provide here.
pub(crate) mod op {
    pub(crate) trait UringOp {}

    impl<T: ?Sized> UringOp for T {}
}

/// The provided-buffer ring: never built here.
pub(crate) mod bufring {
    use super::Never;

    pub(crate) struct BufRing(Never);

    impl BufRing {
        pub(crate) fn new(_count: u16) -> BufRing {
            unreachable!("a provided-buffer ring is only built for the io_uring driver")
        }
    }

    impl crate::buf::pool::KernelRing for BufRing {
        fn push(&mut self, _bid: u16, _addr: *mut u8, _len: u32) {
            match self.0 {}
        }

        fn registration(&self) -> (u64, u16) {
            match self.0 {}
        }
    }
}

/// What the probe learned from a test ring.
pub(crate) struct RingProbe {
    pub(crate) flags: RingFlags,
    pub(crate) opcodes: Vec<(&'static str, bool)>,
    pub(crate) missing: Vec<&'static str>,
    pub(crate) msg_ring: bool,
    pub(crate) min_wait: bool,
}

/// Always ENOSYS: the platform has no io_uring.
pub(crate) fn probe_ring(_entries: u32, _sqpoll: bool) -> std::io::Result<RingProbe> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

pub(crate) struct UringDriver(Never);

/// The io_uring wake-up; never built here.
pub(crate) struct Doorbell(Never);

impl Doorbell {
    pub(crate) fn ring(&self) {
        match self.0 {}
    }
}

impl UringDriver {
    pub(crate) fn new(
        _config: &DriverConfig,
        _caps: &Capabilities,
        _pool: &Rc<Pool>,
    ) -> Result<(UringDriver, crate::driver::Doorbell)> {
        Err(Error::new(ErrorKind::Unsupported, "io_uring (Linux only)"))
    }

    pub(crate) fn submit<T: OpCode>(
        &mut self,
        _op: &mut T,
        _multishot: bool,
    ) -> usize {
        match self.0 {}
    }

    pub(crate) fn poll_op(&mut self, _key: usize, _cx: &mut Context<'_>) -> Poll<CqeResult> {
        match self.0 {}
    }

    pub(crate) fn poll_multi(&mut self, _key: usize, _cx: &mut Context<'_>) -> Poll<CqeResult> {
        match self.0 {}
    }

    pub(crate) fn drop_op(&mut self, _key: usize, _orphan: Box<dyn Orphan>) {
        match self.0 {}
    }

    pub(crate) fn cancel_op(&mut self, _key: usize) {
        match self.0 {}
    }

    pub(crate) fn cancel_multi(&mut self, _key: usize) {
        match self.0 {}
    }

    pub(crate) fn ring_fd(&self) -> std::io::Result<crate::sys::fd::OwnedDesc> {
        match self.0 {}
    }

    pub(crate) fn ring_doorbell(&mut self, _target: Arc<CoreShared>) -> bool {
        match self.0 {}
    }

    pub(crate) fn take_graveyard(&mut self) -> Vec<Box<dyn Orphan>> {
        match self.0 {}
    }

    pub(crate) fn in_flight(&self) -> usize {
        match self.0 {}
    }

    pub(crate) fn stats(&self) -> &DriverStats {
        match self.0 {}
    }

    pub(crate) fn turn(&mut self, _timeout: Option<Duration>, _may_sleep: &dyn Fn() -> bool) {
        match self.0 {}
    }
}

/// `send_file` of the io_uring backend; never reached here (no io_uring core exists).
pub(crate) mod send_file {
    use crate::driver::{SharedFd, WriteTarget};
    use crate::error::{Error, ErrorKind, Result};

    pub(crate) async fn send_file(
        _target: &impl WriteTarget,
        _file: &SharedFd,
        _offset: u64,
        _len: u64,
    ) -> Result<u64> {
        Err(Error::new(ErrorKind::Unsupported, "splice (io_uring, Linux only)"))
    }
}

/// `send_many` of the io_uring backend; never reached here (no io_uring core exists).
pub(crate) mod send_many {
    use crate::driver::SharedFd;
    use crate::error::{Error, ErrorKind, Result};

    pub(crate) async fn send_many<B>(
        _fd: &SharedFd,
        datagrams: Vec<(B, socket2::SockAddr)>,
    ) -> Vec<(Result<usize>, B)> {
        datagrams
            .into_iter()
            .map(|(buf, _)| (Err(Error::new(ErrorKind::Unsupported, "sendmsg (io_uring)")), buf))
            .collect()
    }
}
