//! UDP generic segmentation offload (Linux 4.18): one sendmsg, many datagrams.

use crate::op::GSO_CMSG_BYTES;

/// Whether the platform can cut a send into datagrams in the kernel.
pub(crate) const GSO_AVAILABLE: bool = cfg!(target_os = "linux");

/// Points `msg` at `space` holding a `UDP_SEGMENT` control message for `size`-byte segments.
#[cfg(target_os = "linux")]
pub(crate) fn write_gso(
    space: &mut [u64; GSO_CMSG_BYTES / 8],
    msg: &mut coring_compat::sys::MsgHdr,
    size: u16,
) {
    msg.msg_control = space.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
    // SAFETY: `space` is `GSO_CMSG_BYTES` long, enough for one u16 cmsg (CMSG_SPACE(2) = 24
    // on 64-bit Linux), and `msg` now points at it, so CMSG_FIRSTHDR is inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
    }
}

/// No GSO here; callers check [`GSO_AVAILABLE`] first.
#[cfg(not(target_os = "linux"))]
pub(crate) fn write_gso(
    _space: &mut [u64; GSO_CMSG_BYTES / 8],
    _msg: &mut coring_compat::sys::MsgHdr,
    _size: u16,
) {
    unreachable!("GSO sends are refused before an op is built on this platform")
}
