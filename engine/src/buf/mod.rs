//! Owned buffers for the rent API.
//!
//! An operation takes its buffer by value and gives it back with the result
//! (`read(buf) -> (Result<usize>, buf)`), so the kernel can write into it after the future that
//! asked was dropped: the driver keeps the buffer parked until the final completion.
//!
//! Reads fill the spare capacity (`len..capacity`) and then extend `len`; writes send `0..len`.

pub(crate) mod pool;

pub use pool::{DEFAULT_POOL_BUFFER_BYTES, DEFAULT_POOL_BUFFERS, PoolStats, PooledBuf};

/// A buffer whose initialised bytes `0..bytes_init()` can be sent.
///
/// # Safety
///
/// `stable_ptr()` must point to at least `bytes_init()` initialised bytes, and that memory must
/// stay valid and unmoved while the value is alive, even when the value itself is moved (it lives
/// on the heap or is `'static`).
pub unsafe trait IoBuf: Unpin + 'static {
    /// Start of the bytes.
    fn stable_ptr(&self) -> *const u8;
    /// How many bytes are initialised and will be sent.
    fn bytes_init(&self) -> usize;
    /// The initialised bytes.
    fn as_slice(&self) -> &[u8] {
        // SAFETY: the trait contract says `stable_ptr` points to `bytes_init` initialised bytes
        // that live as long as `self`.
        unsafe { std::slice::from_raw_parts(self.stable_ptr(), self.bytes_init()) }
    }
}

/// A buffer the kernel can fill.
///
/// # Safety
///
/// `stable_mut_ptr()` must point to `bytes_total()` writable bytes that stay valid and unmoved
/// while the value is alive (see [`IoBuf`]), and `set_init(n)` must only be trusted for
/// `n <= bytes_total()`.
pub unsafe trait IoBufMut: Unpin + 'static {
    /// Start of the memory.
    fn stable_mut_ptr(&mut self) -> *mut u8;
    /// Bytes already initialised (the length).
    fn bytes_init(&self) -> usize;
    /// Capacity in bytes.
    fn bytes_total(&self) -> usize;
    /// Marks `0..n` initialised (after the kernel wrote `bytes_init()..n`).
    ///
    /// # Safety
    ///
    /// The first `n` bytes must be initialised and `n <= bytes_total()`.
    unsafe fn set_init(&mut self, n: usize);
}

// SAFETY: a Vec's heap block does not move when the Vec is moved; `as_ptr`/`len` describe
// initialised bytes.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for `IoBuf for Vec<u8>`; the capacity is writable memory owned by the Vec.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
    unsafe fn set_init(&mut self, n: usize) {
        if n > self.len() {
            // SAFETY: the caller guarantees `n <= capacity` and that `0..n` is initialised.
            unsafe { self.set_len(n) };
        }
    }
}

// SAFETY: a boxed slice lives on the heap; all of it is initialised.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: `'static` data never moves or goes away.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: `'static` data never moves or goes away.
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: a String's heap block does not move when the String is moved.
unsafe impl IoBuf for String {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: a BytesMut's storage is on the heap and does not move when the handle moves;
// `as_ptr`/`len` describe initialised bytes.
unsafe impl IoBuf for bytes::BytesMut {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: as above; the capacity is writable memory owned by the BytesMut (reserve before
// reading to make room).
unsafe impl IoBufMut for bytes::BytesMut {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
    unsafe fn set_init(&mut self, n: usize) {
        if n > self.len() {
            // SAFETY: the caller guarantees `n <= capacity` and that `0..n` is initialised.
            unsafe { self.set_len(n) };
        }
    }
}

// SAFETY: a Bytes' storage is immutable and does not move when the handle moves.
unsafe impl IoBuf for bytes::Bytes {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

/// Where a read into `buf` writes (just past its initialised bytes) and how much room there is.
pub(crate) fn spare_of<B: IoBufMut>(buf: &mut B) -> (*mut u8, usize) {
    let init = buf.bytes_init();
    let room = buf.bytes_total() - init;
    // SAFETY: `init <= bytes_total`, so the offset stays inside the allocation.
    let ptr = unsafe { buf.stable_mut_ptr().add(init) };
    (ptr, room)
}

/// A window `begin..end` into an [`IoBuf`], so `write_all` can send the rest of a buffer
/// without copying it.
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B: IoBuf> Slice<B> {
    /// The bytes `begin..end` of `buf`; the range is clamped to the initialised bytes.
    pub fn new(buf: B, begin: usize, end: usize) -> Self {
        let end = end.min(buf.bytes_init());
        Slice {
            begin: begin.min(end),
            end,
            buf,
        }
    }

    /// Gives the whole buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }

    /// Where the window starts in the buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }
}

// SAFETY: `begin <= end <= buf.bytes_init()` (clamped in `new`), so the window is initialised
// memory of a buffer that is itself stable.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        // SAFETY: `begin <= bytes_init`, so the offset stays inside the allocation.
        unsafe { self.buf.stable_ptr().add(self.begin) }
    }
    fn bytes_init(&self) -> usize {
        self.end - self.begin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_is_clamped_to_initialised_bytes() {
        let s = Slice::new(b"hello".to_vec(), 3, 99);
        assert_eq!(s.as_slice(), b"lo");
        let s = Slice::new(b"hello".to_vec(), 9, 2);
        assert_eq!(s.as_slice(), b"");
    }

    #[test]
    fn vec_set_init_only_grows() {
        let mut v = Vec::with_capacity(8);
        v.extend_from_slice(b"abc");
        // SAFETY: 2 <= len, nothing changes.
        unsafe { IoBufMut::set_init(&mut v, 2) };
        assert_eq!(v.len(), 3);
    }
}
