//! Provided-buffer ring (IORING_REGISTER_PBUF_RING, 5.19): the kernel picks a free buffer from
//! it for each multishot receive, so no buffer is tied to an idle connection.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// The buffer group every core's pool registers as.
pub(crate) const POOL_GROUP: u16 = 0;

/// The ring the kernel takes buffers from and we give them back to.
///
/// INVARIANT: `entries` points at `mask + 1` entries, page-aligned, allocated here and freed
/// only in `Drop`; the driver that registered it is dropped before the pool that owns this
/// ring (field order of the core context), so the kernel never reads freed memory.
pub(crate) struct BufRing {
    entries: NonNull<BufRingEntry>,
    layout: Layout,
    mask: u16,
    /// Our copy of the tail; published to the shared tail after each push.
    tail: u16,
}

impl BufRing {
    /// A ring for `count` buffers (a power of two, at most 32768).
    pub(crate) fn new(count: u16) -> BufRing {
        assert!(
            count.is_power_of_two(),
            "buffer ring size must be a power of two"
        );
        let bytes = usize::from(count) * size_of::<BufRingEntry>();
        let layout = Layout::from_size_align(bytes, 4096).expect("ring layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let entries =
            NonNull::new(ptr.cast()).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        BufRing {
            entries,
            layout,
            mask: count - 1,
            tail: 0,
        }
    }

    /// Address to register with the kernel.
    pub(crate) fn addr(&self) -> u64 {
        self.entries.as_ptr() as u64
    }

    /// Entries in the ring.
    pub(crate) fn len(&self) -> u16 {
        self.mask.wrapping_add(1)
    }

    /// Hands buffer `bid` (`len` bytes at `addr`) to the kernel.
    pub(crate) fn push(&mut self, bid: u16, addr: *mut u8, len: u32) {
        let index = usize::from(self.tail & self.mask);
        // SAFETY: `index <= mask`, inside the allocation (INVARIANT); the kernel only reads
        // entries between head and the published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.entries.as_ptr().add(index) };
        entry.set_addr(addr as u64);
        entry.set_len(len);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lives inside the first entry of our allocation and is only
        // written here; the release store publishes the entry above before the new tail.
        let tail = unsafe { &*(BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl crate::buf::pool::KernelRing for BufRing {
    fn push(&mut self, bid: u16, addr: *mut u8, len: u32) {
        BufRing::push(self, bid, addr, len);
    }

    fn registration(&self) -> (u64, u16) {
        (self.addr(), self.len())
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout (INVARIANT).
        unsafe { dealloc(self.entries.as_ptr().cast(), self.layout) };
    }
}
