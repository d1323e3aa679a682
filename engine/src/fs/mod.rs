//! Files on a core: positioned reads, and sending a file to a socket without a user-space copy
//! (`TcpStream::send_file`: splice on io_uring, sendfile on the compat driver).

use std::path::Path;

use crate::buf::IoBufMut;
use crate::driver::Op;
use crate::driver::SharedFd;
use crate::error::{Error, Result};
use crate::op::ReadAt;

/// An open file.
#[derive(Debug)]
pub struct File {
    pub(crate) fd: SharedFd,
}

impl File {
    /// Opens `path` for reading. The open itself is a plain (blocking) syscall: opening is
    /// quick on local filesystems, and the reads are what the engine drives.
    pub fn open(path: impl AsRef<Path>) -> Result<File> {
        let file = std::fs::File::open(path).map_err(|e| Error::from_io(e, "open"))?;
        Ok(File {
            fd: SharedFd::file(file),
        })
    }

    /// Wraps an open std file.
    pub fn from_std(file: std::fs::File) -> File {
        File {
            fd: SharedFd::file(file),
        }
    }

    /// The file's size in bytes.
    pub fn len(&self) -> Result<u64> {
        Ok(self
            .fd
            .file_metadata()
            .map_err(|e| Error::from_io(e, "fstat"))?
            .len())
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads into the spare capacity of `buf` from `offset`; `Ok(0)` at end of file.
    pub async fn read_at<B: IoBufMut>(&self, buf: B, offset: u64) -> (Result<usize>, B) {
        let op = ReadAt {
            fd: self.fd.clone(),
            buf,
            offset,
        };
        let done = Op::submit(op).await;
        let mut buf = done.op.buf;
        let result = done.result.map(|n| {
            let n = n as usize;
            let init = buf.bytes_init() + n;
            // SAFETY: the kernel wrote `n` bytes right after the initialised part.
            unsafe { buf.set_init(init) };
            n
        });
        (result, buf)
    }
}
