//! The ceiling: a hand-written io_uring loop per core, with no runtime at all. SINGLE_ISSUER,
//! DEFER_TASKRUN and COOP_TASKRUN rings; multishot accept; one recv and at most one send in
//! flight per connection into buffers the connection owns; one `io_uring_enter` per turn.

use std::os::fd::{IntoRawFd, RawFd};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::{App, ServerConfig, StaticFile, respond};

const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const BUF_BYTES: usize = 16 * 1024;

fn token(op: u64, fd: RawFd) -> u64 {
    op << 32 | fd as u32 as u64
}

struct Conn {
    input: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
}

/// Serves `config` with the raw loop, one thread per listener; never returns normally.
pub fn serve(config: ServerConfig) -> Result<(), String> {
    let file = config.static_file()?;
    let app = config.app;
    super::thread_per_listener(config.listeners, move |listener| {
        run_loop(listener, app, file.as_deref())
    })
}

fn push(ring: &mut IoUring, entry: &squeue::Entry) -> Result<(), String> {
    loop {
        // SAFETY: every buffer an entry points at lives in a boxed `Conn` that is only dropped
        // after the op's completion has been reaped (a connection is closed from its own
        // completion, and it has at most one recv or send in flight).
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit().map_err(|e| format!("io_uring_enter: {e}"))?;
    }
}

fn run_loop(
    listener: std::net::TcpListener,
    app: App,
    file: Option<&StaticFile>,
) -> Result<(), String> {
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(4096)
        .map_err(|e| format!("io_uring_setup: {e}"))?;
    listener.set_nonblocking(false).map_err(|e| e.to_string())?;
    let lfd = listener.into_raw_fd();
    let accept = opcode::AcceptMulti::new(types::Fd(lfd))
        .build()
        .user_data(token(ACCEPT, lfd));
    push(&mut ring, &accept)?;
    let mut conns: Vec<Option<Box<Conn>>> = Vec::new();
    let mut events: Vec<(u64, i32, u32)> = Vec::with_capacity(4096);
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(format!("io_uring_enter: {e}")),
        }
        events.clear();
        events.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, res, flags) in &events {
            let (op, fd) = (data >> 32, data as u32 as RawFd);
            match op {
                ACCEPT => {
                    if !cqueue::more(flags) {
                        push(&mut ring, &accept)?;
                    }
                    if res < 0 {
                        continue;
                    }
                    let cfd = res;
                    let one: libc::c_int = 1;
                    // SAFETY: `cfd` is the socket just accepted; `one` outlives the call.
                    unsafe {
                        libc::setsockopt(
                            cfd,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&one as *const libc::c_int).cast(),
                            size_of::<libc::c_int>() as libc::socklen_t,
                        );
                    }
                    let slot = cfd as usize;
                    if conns.len() <= slot {
                        conns.resize_with(slot + 1, || None);
                    }
                    let conn = conns[slot].insert(Box::new(Conn {
                        input: Vec::with_capacity(BUF_BYTES),
                        out: Vec::with_capacity(BUF_BYTES),
                        sent: 0,
                    }));
                    push(&mut ring, &recv(cfd, conn))?;
                }
                RECV => {
                    let Some(conn) = conns.get_mut(fd as usize).and_then(Option::as_mut) else {
                        continue;
                    };
                    if res <= 0 {
                        close(&mut conns, fd);
                        continue;
                    }
                    // SAFETY: the kernel wrote `res` bytes into the spare capacity `recv`
                    // offered.
                    unsafe { conn.input.set_len(conn.input.len() + res as usize) };
                    match app {
                        App::Echo => {
                            std::mem::swap(&mut conn.input, &mut conn.out);
                        }
                        // Refused before serving (`servers::serve`).
                        App::Ws => {
                            close(&mut conns, fd);
                            continue;
                        }
                        App::Tfb => match respond(&conn.input, &mut conn.out, file) {
                            Ok(used) => {
                                conn.input.drain(..used);
                            }
                            Err(_) => {
                                close(&mut conns, fd);
                                continue;
                            }
                        },
                    }
                    let entry = if conn.out.is_empty() {
                        recv(fd, conn)
                    } else {
                        send(fd, conn)
                    };
                    push(&mut ring, &entry)?;
                }
                SEND => {
                    let Some(conn) = conns.get_mut(fd as usize).and_then(Option::as_mut) else {
                        continue;
                    };
                    if res < 0 {
                        close(&mut conns, fd);
                        continue;
                    }
                    conn.sent += res as usize;
                    let entry = if conn.sent < conn.out.len() {
                        send(fd, conn)
                    } else {
                        conn.out.clear();
                        conn.sent = 0;
                        recv(fd, conn)
                    };
                    push(&mut ring, &entry)?;
                }
                _ => {}
            }
        }
    }
}

/// A recv into the spare capacity of the connection's input (grown if full).
fn recv(fd: RawFd, conn: &mut Conn) -> squeue::Entry {
    if conn.input.capacity() - conn.input.len() < 1024 {
        conn.input.reserve(BUF_BYTES);
    }
    let spare = conn.input.spare_capacity_mut();
    opcode::Recv::new(types::Fd(fd), spare.as_mut_ptr().cast(), spare.len() as u32)
        .build()
        .user_data(token(RECV, fd))
}

/// A send of what is left of the connection's output.
fn send(fd: RawFd, conn: &Conn) -> squeue::Entry {
    let rest = &conn.out[conn.sent..];
    opcode::Send::new(types::Fd(fd), rest.as_ptr(), rest.len() as u32)
        .build()
        .user_data(token(SEND, fd))
}

fn close(conns: &mut [Option<Box<Conn>>], fd: RawFd) {
    if let Some(slot) = conns.get_mut(fd as usize) {
        *slot = None;
    }
    // SAFETY: `fd` is a connection this loop accepted and owns; nothing is in flight on it
    // (its only op just completed).
    unsafe { libc::close(fd) };
}
