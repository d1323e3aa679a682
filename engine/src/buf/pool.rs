//! The per-core buffer pool: fixed-size buffers carved from one allocation.
//!
//! On io_uring the free buffers sit in a provided-buffer ring and the kernel picks one for each
//! multishot receive; on the compat driver a receive takes a free buffer only once the socket
//! is readable. Either way an idle connection holds no buffer: memory follows bytes in flight.
//! A [`PooledBuf`] goes back to the pool when dropped, waking receivers that ran out.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};

use crossbeam_queue::ArrayQueue;

use crate::buf::IoBuf;
use crate::runtime::context::{self, CoreShared};

/// Buffers per core unless configured.
pub const DEFAULT_POOL_BUFFERS: u16 = 512;
/// Bytes per pooled buffer unless configured: room for a protocol's 16 KiB unit with its
/// framing (a TLS record, a WebSocket message of 16 KiB, an HTTP/2 frame) in one receive; at
/// 16 KiB exactly every such unit straddled two buffers, two receives and a copy to join them.
/// Buffers are only touched as bytes arrive, so resident memory follows what is received.
pub const DEFAULT_POOL_BUFFER_BYTES: usize = 32 * 1024;

/// Smallest pooled buffer: a pooled datagram spends 144 bytes on its header and address.
pub const MIN_BUFFER_BYTES: usize = 512;

/// Figures of one core's pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers in the pool.
    pub buffers: u64,
    /// Bytes per buffer.
    pub buffer_bytes: u64,
    /// Buffers handed out and not yet returned.
    pub in_use: u64,
    /// Buffers free for the next receive (in the kernel's ring, or in the free list).
    pub free: u64,
    /// Times a receive found the pool empty and had to wait for a buffer to come back.
    pub misses: u64,
    /// ENOBUFS completions from the kernel (the ring ran dry under a multishot receive).
    pub enobufs: u64,
}

/// A ring of free buffers that the kernel picks from by itself (io_uring's provided-buffer
/// ring): the pool gives buffers back to it, the driver registers it. The driver that has one
/// makes it (`driver::kernel_ring`); the pool only knows this much of it.
pub(crate) trait KernelRing {
    /// Hands buffer `bid` (`len` bytes at `addr`) to the kernel.
    fn push(&mut self, bid: u16, addr: *mut u8, len: u32);
    /// Where the ring is and how many entries it has, for its registration.
    fn registration(&self) -> (u64, u16);
}

/// Where free buffers wait.
pub(crate) enum Free {
    /// In a ring the kernel picks from (io_uring).
    Ring(Box<dyn KernelRing>),
    /// In a free list (compat).
    List(Vec<u16>),
}

/// The pool's memory, and the way back for buffers let go on other threads (a buffer handed
/// out as `Bytes`, [`PooledBuf::into_bytes`], may travel).
///
/// INVARIANT: `memory` is `count * size` bytes allocated with `layout` and freed only in `Drop`,
/// once the pool and every shared view hold no `Arc` to it any more. The pool goes after the
/// core's driver, so by then the kernel's ring is unregistered and nothing writes the memory.
pub(crate) struct Home {
    memory: NonNull<u8>,
    layout: Layout,
    /// Buffers whose last view was dropped off the core, for the core to take back (room for
    /// every buffer: at most all of them are out).
    returned: ArrayQueue<u16>,
    /// Woken when a buffer comes back that way, so that a receiver waiting for one runs.
    core: OnceLock<Weak<CoreShared>>,
}

// SAFETY: `memory` is a plain allocation; threads other than the core's only read bytes of
// buffers handed out to them (no one writes a handed-out buffer) and push to `returned`, which
// is thread-safe; it is freed once, by the last holder.
unsafe impl Send for Home {}
// SAFETY: as above: shared access is reads of handed-out buffers and the thread-safe queue.
unsafe impl Sync for Home {}

impl Drop for Home {
    fn drop(&mut self) {
        // SAFETY: allocated in `Pool::new` with this layout; this was the last holder
        // (INVARIANT).
        unsafe { dealloc(self.memory.as_ptr(), self.layout) };
    }
}

/// The pool of one core.
///
/// INVARIANT: every `PooledBuf` and every op that may receive into the pool holds an `Rc` to
/// it, and every shared view an `Arc` to its `Home`, so the memory outlives all of them.
pub(crate) struct Pool {
    home: Arc<Home>,
    size: usize,
    count: u16,
    state: RefCell<State>,
}

struct State {
    free: Free,
    /// Buffers in the provided-buffer ring (ring mode).
    in_ring: u16,
    /// Free buffers promised to receivers re-arming after ENOBUFS; at most the free count, so
    /// no more receivers re-arm than there are buffers for them.
    reserved: u16,
    stats: PoolStats,
    /// Receivers waiting for a buffer, in arrival order; each returned buffer wakes one.
    waiters: VecDeque<(u64, Waker)>,
    next_ticket: u64,
}

impl Pool {
    /// A pool of `count` buffers of `size` bytes (`count` rounded up to a power of two). With
    /// `ring` (made for that rounded count, see [`Pool::rounded`]) free buffers go to the
    /// kernel's ring instead of a free list.
    pub(crate) fn new(count: u16, size: usize, ring: Option<Box<dyn KernelRing>>) -> Rc<Pool> {
        let count = Self::rounded(count);
        // Room for a datagram header and source address (160 bytes) plus payload.
        let size = size.max(MIN_BUFFER_BYTES);
        let layout = Layout::from_size_align(usize::from(count) * size, 4096).expect("pool layout");
        // SAFETY: non-zero size. Zeroed memory comes from fresh pages: untouched buffers cost
        // no resident memory.
        let ptr = unsafe { alloc_zeroed(layout) };
        let memory = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let free = match ring {
            Some(ring) => Free::Ring(ring),
            None => Free::List((0..count).rev().collect()),
        };
        let pool = Rc::new(Pool {
            home: Arc::new(Home {
                memory,
                layout,
                returned: ArrayQueue::new(usize::from(count)),
                core: OnceLock::new(),
            }),
            size,
            count,
            state: RefCell::new(State {
                free,
                in_ring: 0,
                reserved: 0,
                stats: PoolStats {
                    buffers: u64::from(count),
                    buffer_bytes: size as u64,
                    ..PoolStats::default()
                },
                waiters: VecDeque::new(),
                next_ticket: 0,
            }),
        });
        {
            let mut st = pool.state.borrow_mut();
            let st = &mut *st;
            if let Free::Ring(ring) = &mut st.free {
                for bid in 0..count {
                    ring.push(bid, pool.addr_of(bid), size as u32);
                }
                st.in_ring = count;
            }
        }
        pool
    }

    /// How many buffers a pool asked for `count` has.
    pub(crate) fn rounded(count: u16) -> u16 {
        count.max(1).next_power_of_two()
    }

    /// The ring to register with the kernel, if any: `(address, entries)`.
    #[cfg_attr(
        not(target_os = "linux"),
        allow(
            dead_code,
            reason = "used by the io_uring backend, which only Linux has"
        )
    )]
    pub(crate) fn ring(&self) -> Option<(u64, u16)> {
        match &self.state.borrow().free {
            Free::Ring(r) => Some(r.registration()),
            Free::List(_) => None,
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let st = self.state.borrow();
        let mut stats = st.stats;
        stats.free = match &st.free {
            Free::Ring(_) => u64::from(st.in_ring),
            Free::List(l) => l.len() as u64,
        };
        stats
    }

    /// The kernel took a buffer from the ring (a completion carried it).
    #[cfg_attr(
        not(target_os = "linux"),
        allow(
            dead_code,
            reason = "used by the io_uring backend, which only Linux has"
        )
    )]
    pub(crate) fn consumed_by_kernel(&self) {
        let mut st = self.state.borrow_mut();
        st.in_ring = st.in_ring.saturating_sub(1);
        st.reserved = st.reserved.min(st.in_ring);
    }

    /// Claims one of the free buffers for a receiver about to re-arm; false when every free
    /// buffer is already claimed.
    pub(crate) fn reserve(&self) -> bool {
        let mut st = self.state.borrow_mut();
        let free = match &st.free {
            Free::Ring(_) => st.in_ring,
            Free::List(l) => l.len() as u16,
        };
        if st.reserved < free {
            st.reserved += 1;
            true
        } else {
            false
        }
    }

    /// Drops a claim that was not used (the re-armed receive found no buffer after all).
    pub(crate) fn unreserve(&self) {
        let mut st = self.state.borrow_mut();
        st.reserved = st.reserved.saturating_sub(1);
    }

    fn addr_of(&self, bid: u16) -> *mut u8 {
        debug_assert!(bid < self.count);
        // SAFETY: `bid < count`, so the offset is inside the allocation (INVARIANT).
        unsafe { self.home.memory.as_ptr().add(usize::from(bid) * self.size) }
    }

    /// Takes a free buffer (compat mode); `None` when the pool is empty.
    pub(crate) fn take(&self) -> Option<u16> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let bid = match &mut st.free {
            Free::List(list) => list.pop(),
            Free::Ring(_) => None,
        };
        if bid.is_some() {
            st.reserved = st.reserved.saturating_sub(1);
        }
        bid
    }

    /// Where buffer `bid` starts and how big it is (for a compat-mode receive).
    pub(crate) fn slot(&self, bid: u16) -> (*mut u8, usize) {
        (self.addr_of(bid), self.size)
    }

    /// Wraps buffer `bid`, filled with `len` bytes, as a handed-out buffer.
    pub(crate) fn hand_out(self: &Rc<Self>, bid: u16, len: usize) -> PooledBuf {
        self.state.borrow_mut().stats.in_use += 1;
        PooledBuf {
            pool: Rc::clone(self),
            bid,
            start: 0,
            end: len.min(self.size),
        }
    }

    /// Returns a buffer that was never handed out (a compat receive that would block, or a
    /// completion nobody will read).
    pub(crate) fn give_back(&self, bid: u16) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let addr = self.addr_of(bid);
        match &mut st.free {
            Free::Ring(ring) => {
                ring.push(bid, addr, self.size as u32);
                st.in_ring += 1;
            }
            Free::List(list) => list.push(bid),
        }
        // One buffer, one waiter: waking them all would have every receiver re-arm and all but
        // one find the pool empty again.
        if let Some((_, w)) = st.waiters.pop_front() {
            w.wake();
        }
    }

    /// Puts back a buffer taken for a receive that would have blocked (compat), without
    /// waking anyone: nothing new became available.
    pub(crate) fn untake(&self, bid: u16) {
        if let Free::List(list) = &mut self.state.borrow_mut().free {
            list.push(bid);
        }
    }

    /// Queues `waker` until a buffer comes back; counts the miss. Returns a ticket for
    /// [`Pool::stop_waiting`].
    pub(crate) fn wait_for_buffer(&self, waker: &Waker) -> u64 {
        let mut st = self.state.borrow_mut();
        st.stats.misses += 1;
        st.next_ticket += 1;
        let ticket = st.next_ticket;
        st.waiters.push_back((ticket, waker.clone()));
        ticket
    }

    /// Keeps a waiter queued: polled before a buffer was free for it (spurious poll, or the
    /// buffer it was woken for went to another receive). It keeps its place if it still has
    /// one, and goes to the back otherwise.
    pub(crate) fn rewait(&self, ticket: u64, waker: &Waker) -> u64 {
        let mut st = self.state.borrow_mut();
        if let Some(entry) = st.waiters.iter_mut().find(|(t, _)| *t == ticket) {
            if !entry.1.will_wake(waker) {
                entry.1.clone_from(waker);
            }
            return ticket;
        }
        st.next_ticket += 1;
        let ticket = st.next_ticket;
        st.waiters.push_back((ticket, waker.clone()));
        ticket
    }

    /// A waiter goes away. If it had already been woken for a returned buffer, the wake-up is
    /// passed on so the buffer does not sit unused while others wait.
    pub(crate) fn stop_waiting(&self, ticket: u64) {
        let mut st = self.state.borrow_mut();
        let before = st.waiters.len();
        st.waiters.retain(|(t, _)| *t != ticket);
        if st.waiters.len() == before
            && let Some((_, w)) = st.waiters.pop_front()
        {
            w.wake();
        }
    }

    pub(crate) fn count_enobufs(&self) {
        self.state.borrow_mut().stats.enobufs += 1;
    }
}

impl Pool {
    /// The core to wake when a buffer comes back from another thread.
    pub(crate) fn set_core(&self, core: Weak<CoreShared>) {
        let _ = self.home.core.set(core);
    }

    /// A shared view's buffer is back: it returns to the pool.
    fn take_back(&self, bid: u16) {
        self.state.borrow_mut().stats.in_use -= 1;
        self.give_back(bid);
    }

    /// Whether views dropped on other threads have buffers waiting to be taken back: the core
    /// must not sleep then (the thread that pushed may have found it not yet asleep, and so
    /// not rung it).
    pub(crate) fn has_returned(&self) -> bool {
        !self.home.returned.is_empty()
    }

    /// Takes back the buffers whose views were dropped on other threads (each core turn).
    pub(crate) fn collect_returned(&self) {
        while let Some(bid) = self.home.returned.pop() {
            self.take_back(bid);
        }
    }
}

/// A pooled receiver's standing with the pool while the ring is dry: a claim on a free buffer
/// (so no more receivers re-arm than there are buffers for them) or a place in the queue for
/// the next returned one. Every pooled receiver (stream or datagram) goes through it.
#[derive(Debug, Default)]
pub(crate) struct BufferClaim {
    /// Our place in the pool's queue while waiting for a buffer (tickets start at 1; 0: not
    /// waiting).
    waiting: u64,
    /// We hold a claim on a free buffer for the receive we are (re-)arming.
    reserved: bool,
}

impl BufferClaim {
    /// Before arming: `Ready` if the receive may arm now, `Pending` while still queued for a
    /// buffer (woken when one comes back).
    pub(crate) fn poll_arm(&mut self, pool: &Pool, cx: &mut Context<'_>) -> Poll<()> {
        let ticket = self.waiting;
        if ticket == 0 {
            return Poll::Ready(());
        }
        if !pool.reserve() {
            // Polled before a buffer was free for us: keep (or retake) our place.
            self.waiting = pool.rewait(ticket, cx.waker());
            return Poll::Pending;
        }
        self.waiting = 0;
        self.reserved = true;
        Poll::Ready(())
    }

    /// The ring ran dry under the receive (ENOBUFS): `Ready` to re-arm at once with a claimed
    /// buffer, `Pending` once queued for the next returned one.
    pub(crate) fn on_enobufs(&mut self, pool: &Pool, cx: &mut Context<'_>) -> Poll<()> {
        pool.count_enobufs();
        if std::mem::take(&mut self.reserved) {
            pool.unreserve();
        }
        if pool.reserve() {
            self.reserved = true;
            return Poll::Ready(());
        }
        self.waiting = pool.wait_for_buffer(cx.waker());
        Poll::Pending
    }

    /// Any other completion: a claim, if held, has been used.
    pub(crate) fn settled(&mut self) {
        self.reserved = false;
    }

    /// The receiver goes away: gives up its place and its claim.
    pub(crate) fn release(&mut self, pool: &Pool) {
        let ticket = std::mem::take(&mut self.waiting);
        if ticket != 0 {
            pool.stop_waiting(ticket);
        }
        if std::mem::take(&mut self.reserved) {
            pool.unreserve();
        }
    }
}

/// A buffer from the core's pool holding received bytes; goes back to the pool when dropped.
///
/// It reads as a byte slice, implements [`bytes::Buf`] (so codecs built on `bytes` take it
/// as-is), and can be written to a socket directly (it implements [`IoBuf`]), so an echo
/// never copies.
pub struct PooledBuf {
    pool: Rc<Pool>,
    bid: u16,
    start: usize,
    end: usize,
}

impl PooledBuf {
    /// The bytes left (after any `advance`).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `start <= end <= size`, inside buffer `bid` of the pool, which is alive
        // (`self.pool`); the kernel wrote these bytes before handing the buffer out, and no one
        // else writes to a handed-out buffer.
        unsafe {
            std::slice::from_raw_parts(
                self.pool.addr_of(self.bid).add(self.start),
                self.end - self.start,
            )
        }
    }

    /// Copies the bytes into a `Bytes` (which must be `Send`, unlike this per-core buffer).
    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(self.as_slice())
    }

    /// The bytes as a `Bytes` without a copy: a view of the pooled buffer, which goes back to
    /// its core's pool when the last clone is dropped, on whichever thread. Until then the
    /// buffer is out of the pool: hand out views of large payloads, and copy small ones
    /// ([`PooledBuf::to_bytes`]) that may be kept.
    pub fn into_bytes(self) -> bytes::Bytes {
        let me = ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again: its `Rc` is moved out exactly once, and
        // the buffer's return is the view's job from here on.
        let pool = unsafe { std::ptr::read(&me.pool) };
        bytes::Bytes::from_owner(SharedBuf {
            ptr: me.stable_ptr(),
            len: me.end - me.start,
            bid: me.bid,
            home: Arc::clone(&pool.home),
        })
    }

    /// The bytes, writable: a handed-out buffer is this value's alone (to decode in place).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`; `&mut self` makes this the only access to the buffer, which
        // neither the kernel nor the pool touches while it is handed out.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.pool.addr_of(self.bid).add(self.start),
                self.end - self.start,
            )
        }
    }

    /// Narrows the view to `range` of the current bytes.
    pub(crate) fn window(&mut self, range: std::ops::Range<usize>) {
        let end = (self.start + range.end).min(self.end);
        self.start = (self.start + range.start).min(end);
        self.end = end;
    }

    /// Keeps only the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.end = self.end.min(self.start + len);
    }
}

impl Deref for PooledBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl bytes::Buf for PooledBuf {
    fn remaining(&self) -> usize {
        self.end - self.start
    }

    fn chunk(&self) -> &[u8] {
        self.as_slice()
    }

    fn advance(&mut self, cnt: usize) {
        assert!(
            cnt <= self.remaining(),
            "advance past the end of a pooled buffer"
        );
        self.start += cnt;
    }
}

// SAFETY: the bytes live in the pool's allocation, which never moves and outlives `self`
// (INVARIANT of `Pool`); `start..end` is initialised.
unsafe impl IoBuf for PooledBuf {
    fn stable_ptr(&self) -> *const u8 {
        // SAFETY: `start <= size`, inside the buffer.
        unsafe { self.pool.addr_of(self.bid).add(self.start) }
    }

    fn bytes_init(&self) -> usize {
        self.end - self.start
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.pool.state.borrow_mut().stats.in_use -= 1;
        self.pool.give_back(self.bid);
    }
}

/// A pooled buffer shared as `Bytes` ([`PooledBuf::into_bytes`]).
struct SharedBuf {
    ptr: *const u8,
    len: usize,
    bid: u16,
    home: Arc<Home>,
}

// SAFETY: the bytes at `ptr` belong to a handed-out buffer that no one writes until it is back
// in the pool, which happens only when this view is dropped; `home` keeps them allocated.
unsafe impl Send for SharedBuf {}

impl AsRef<[u8]> for SharedBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes at `ptr` inside the buffer, alive and unwritten while
        // this view exists (see `Send` above).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for SharedBuf {
    fn drop(&mut self) {
        let home = &self.home;
        let here = context::try_with_current(|ctx| {
            let mine = Arc::ptr_eq(&ctx.pool.home, home);
            if mine {
                ctx.pool.take_back(self.bid);
            }
            mine
        });
        if here != Some(true) {
            // Never full: it has room for every buffer.
            let _ = home.returned.push(self.bid);
            if let Some(core) = home.core.get().and_then(Weak::upgrade) {
                core.wake();
            }
        }
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuf")
            .field("bid", &self.bid)
            .field("len", &(self.end - self.start))
            .finish()
    }
}
