//! `send_file` on the readiness driver: sendfile(2) where the system has it (Linux, macOS),
//! waiting for room under the stream's write deadline; elsewhere (Windows, some BSDs)
//! positioned reads into one buffer, each sent whole (`TransmitFile` needs overlapped I/O,
//! which a readiness driver does not do).

use crate::driver::{Op, SEND_FILE_CHUNK_BYTES, SharedFd, WriteTarget};
use crate::error::{Error, ErrorKind, Result};
use crate::op::{ReadAt, Send};

pub(crate) async fn send_file(
    target: &impl WriteTarget,
    file: &SharedFd,
    offset: u64,
    len: u64,
) -> Result<u64> {
    let (sock, src) = (target.socket().raw(), file.raw());
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let count = (end - pos).min(SEND_FILE_CHUNK_BYTES as u64) as usize;
        match coring_compat::sys::sendfile(sock, src, &mut pos, count) {
            Ok(0) => break, // end of file
            Ok(_) => {}
            #[cfg(unix)]
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let room = crate::op::PollWritable {
                    fd: target.socket().clone(),
                };
                target.with_deadline(Op::submit(room)).await.result?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // No sendfile here: the rest goes through user space.
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                return Ok(pos - offset + copy_file(target, file, pos, end - pos).await?);
            }
            Err(e) => return Err(Error::from_io(e, "sendfile")),
        }
    }
    Ok(pos - offset)
}

/// Bytes read from the file per round.
const COPY_CHUNK_BYTES: usize = 64 * 1024;

/// `send_file` where the system cannot send a file by itself: positioned reads into one
/// buffer, each written out whole under the write deadline before the next read.
pub(crate) async fn copy_file(
    target: &impl WriteTarget,
    file: &SharedFd,
    offset: u64,
    len: u64,
) -> Result<u64> {
    let mut buf = Vec::with_capacity(COPY_CHUNK_BYTES.min(len as usize));
    let mut sent = 0u64;
    while sent < len {
        buf.clear();
        let want = (len - sent).min(COPY_CHUNK_BYTES as u64) as usize;
        let read = ReadAt {
            fd: file.clone(),
            buf,
            offset: offset + sent,
        };
        let done = Op::submit(read).await;
        let mut data = done.op.buf;
        let n = done.result? as usize;
        if n == 0 {
            break; // end of file
        }
        // SAFETY: the read wrote `n` bytes at the start of the (empty) buffer's spare room.
        unsafe { crate::buf::IoBufMut::set_init(&mut data, n) };
        // The last read may bring more than was asked.
        data.truncate(want);
        let (mut written, total) = (0, data.len());
        while written < total {
            let send = Send {
                fd: target.socket().clone(),
                buf: crate::buf::Slice::new(data, written, total),
            };
            let done = target.with_deadline(Op::submit(send)).await;
            data = done.op.buf.into_inner();
            match done.result {
                Ok(0) => return Err(Error::new(ErrorKind::WriteZero, "send")),
                Ok(m) => written += m as usize,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        sent += total as u64;
        buf = data;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::File;

    #[crate::test]
    fn copy_file_sends_the_asked_range_over_a_socket() {
        // The fallback of `send_file` where the system has no sendfile (Windows), here on
        // every platform and both drivers.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = std::env::temp_dir().join(crate::__test::unique("copy-file"));
        std::fs::write(&path, &data).expect("write file");
        let rt = crate::Runtime::builder().cores(1).build().expect("runtime");
        let (offset, len) = (1_000u64, 250_000u64);
        let file = File::open(&path).expect("open");
        let received = rt.block_on(async move {
            let listener = crate::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr();
            let reader = crate::spawn_local(async move {
                let (conn, _) = listener.accept().await.expect("accept");
                let mut got = Vec::new();
                loop {
                    let (n, buf) = conn.read(Vec::with_capacity(65_536)).await;
                    if n.expect("read") == 0 {
                        break got;
                    }
                    got.extend_from_slice(&buf);
                }
            });
            let conn = crate::net::TcpStream::connect(addr).await.expect("connect");
            let sent = copy_file(&conn.io, &file.fd, offset, len)
                .await
                .expect("copy");
            assert_eq!(sent, len);
            // Past the end of the file: what is there, then end of file.
            let tail = copy_file(&conn.io, &file.fd, 299_990, 100)
                .await
                .expect("tail");
            assert_eq!(tail, 10);
            drop(conn);
            reader.await.expect("reader")
        });
        std::fs::remove_file(&path).ok();
        let mut expected = data[offset as usize..(offset + len) as usize].to_vec();
        expected.extend_from_slice(&data[299_990..]);
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "the bytes differ");
    }
}
