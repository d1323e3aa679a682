//! `send_file` on io_uring: file → pipe → socket with two splices per chunk, no copy through
//! user space; the pipes are kept per core and reused.

use std::cell::RefCell;

use crate::driver::{Op, SEND_FILE_CHUNK_BYTES, SharedFd, WriteTarget};
use crate::error::{Error, ErrorKind, Result};
use crate::op::{PollWritable, Splice};

/// Empty pipes kept per core for the next `send_file`: a pipe costs four syscalls to make
/// (pipe2, its size, two closes) and nothing while it waits empty.
const KEEP_PIPES: usize = 16;

thread_local! {
    static PIPES: RefCell<Vec<(SharedFd, SharedFd)>> = const { RefCell::new(Vec::new()) };
}

/// A pipe from the core's cache, or a new one.
fn take_pipe() -> Result<(SharedFd, SharedFd)> {
    if let Some(pipe) = PIPES.with(|p| p.borrow_mut().pop()) {
        return Ok(pipe);
    }
    let (r, w) =
        crate::sys::fd::pipe(SEND_FILE_CHUNK_BYTES).map_err(|e| Error::from_io(e, "pipe"))?;
    crate::driver::current::with(|d| d.uring().stats.pipes_made += 1);
    Ok((SharedFd::file(r), SharedFd::file(w)))
}

pub(crate) async fn send_file(
    target: &impl WriteTarget,
    file: &SharedFd,
    offset: u64,
    len: u64,
) -> Result<u64> {
    let (pipe_r, pipe_w) = take_pipe()?;
    let sent = splice_through(target, file, offset, len, &pipe_r, &pipe_w).await?;
    // Only a pipe known to be empty goes back (after an error bytes may be left in it).
    PIPES.with(|p| {
        let mut pipes = p.borrow_mut();
        if pipes.len() < KEEP_PIPES {
            pipes.push((pipe_r, pipe_w));
        }
    });
    Ok(sent)
}

/// file → `pipe_w` … `pipe_r` → socket, a chunk at a time; the pipe is empty when it returns
/// `Ok`.
async fn splice_through(
    target: &impl WriteTarget,
    file: &SharedFd,
    offset: u64,
    len: u64,
    pipe_r: &SharedFd,
    pipe_w: &SharedFd,
) -> Result<u64> {
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
