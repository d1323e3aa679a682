//! `send_file` on io_uring: file → pipe → socket with two splices per chunk, no copy through
//! user space.

use crate::driver::{Op, SEND_FILE_CHUNK_BYTES, SharedFd, WriteTarget};
use crate::error::{Error, ErrorKind, Result};
use crate::op::{PollWritable, Splice};

pub(crate) async fn send_file(
    target: &impl WriteTarget,
    file: &SharedFd,
    offset: u64,
    len: u64,
) -> Result<u64> {
    let (pipe_r, pipe_w) =
        crate::sys::fd::pipe(SEND_FILE_CHUNK_BYTES).map_err(|e| Error::from_io(e, "pipe"))?;
    let (pipe_r, pipe_w) = (SharedFd::file(pipe_r), SharedFd::file(pipe_w));
    let mut sent = 0u64;
    while sent < len {
        let chunk = (len - sent).min(SEND_FILE_CHUNK_BYTES as u64) as u32;
        let into_pipe = Splice {
            fd_in: file.clone(),
            off_in: Some(offset + sent),
            fd_out: pipe_w.clone(),
            len: chunk,
        };
        let n = u64::from(Op::submit(into_pipe).await.result?);
        if n == 0 {
            break; // end of file
        }
        let mut in_pipe = n;
        while in_pipe > 0 {
            let out = Splice {
                fd_in: pipe_r.clone(),
                off_in: None,
                fd_out: target.socket().clone(),
                len: in_pipe as u32,
            };
            let m = match target.with_deadline(Op::submit(out)).await.result {
                Ok(m) => m,
                // The socket is non-blocking and full: io_uring hands splice's EAGAIN back
                // instead of waiting, so wait for room and go again.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let room = PollWritable {
                        fd: target.socket().clone(),
                    };
                    target.with_deadline(Op::submit(room)).await.result?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if m == 0 {
                return Err(Error::new(ErrorKind::WriteZero, "splice"));
            }
            in_pipe -= u64::from(m);
        }
        sent += n;
    }
    Ok(sent)
}
