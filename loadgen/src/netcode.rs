//! The `netcode` workload: N netcode 1.02 clients, each connecting with a token this load
//! generator issues (it holds the server's private key, as a matchmaker would), then sending
//! payloads at a fixed rate to a server that echoes them on the same session.
//!
//! Like `udp-echo`, each payload carries its client's number and a sequence number, so every
//! echo is matched to the moment it was due (its latency) and loss, reordering and duplication
//! are counted exactly; the rest is a pattern the echo must repeat.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use coring::net::UdpSocket;
use coring::time::timeout_at;
pub use coring_protocols::netcode::Key;
use coring_protocols::netcode::{
    Client, ClientState, MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES, TokenIssuer, TokenRequest,
};

use crate::run::{CoreRun, Lane, Schedule, Workload};
use crate::stream::error_kind;
use crate::udp::{Echoes, Unit, next_due, record_sent, template};

pub use crate::udp::HEADER;

/// The `netcode` workload, ready to run.
#[derive(Debug)]
pub struct NetcodeEcho {
    addr: SocketAddr,
    target: String,
    size: usize,
    issuer: TokenIssuer,
    /// Client ids are this plus the lane's number (a fresh base per run: a server refuses a
    /// client id it holds already).
    id_base: u64,
}

impl NetcodeEcho {
    /// Echo of `size`-byte payloads to the netcode server at `target`, which holds `key` and
    /// serves `protocol_id`.
    pub fn new(
        target: &str,
        size: usize,
        protocol_id: u64,
        key: Key,
    ) -> Result<NetcodeEcho, String> {
        if !(HEADER..=MAX_PAYLOAD_BYTES).contains(&size) {
            return Err(format!(
                "--size must be between {HEADER} and {MAX_PAYLOAD_BYTES} bytes"
            ));
        }
        let addr = crate::run::resolve(target, target)?;
        let id_base = unix_now().as_nanos() as u64 & !0xffff_ffff;
        Ok(NetcodeEcho {
            addr,
            target: target.to_owned(),
            size,
            issuer: TokenIssuer::new(protocol_id, key),
            id_base,
        })
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// The address client `lane` sends from: against a loopback server on IPv4, an address of
/// its own in 127/8 (Linux routes the whole block to loopback), so that the server's
/// per-source admission sees many sources, as it would see many players; elsewhere any.
fn local_addr(server: SocketAddr, lane: usize) -> SocketAddr {
    match server {
        SocketAddr::V4(v4) if v4.ip().is_loopback() && cfg!(target_os = "linux") => {
            let lane = lane as u32 % (250 * 250 * 250);
            let ip = std::net::Ipv4Addr::new(
                127,
                1 + (lane / 62_500) as u8,
                (lane / 250 % 250) as u8,
                (lane % 250 + 1) as u8,
            );
            SocketAddr::from((ip, 0))
        }
        other => any_addr(other),
    }
}

fn any_addr(server: SocketAddr) -> SocketAddr {
    if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    }
}

impl Workload for NetcodeEcho {
    fn kind(&self) -> &'static str {
        "netcode"
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    fn connection(self: Arc<Self>, lane: Lane) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move { self.client(lane).await })
    }
}

/// One client's socket and state machine, shared by its send and receive loops.
struct Session {
    socket: UdpSocket,
    client: RefCell<Client>,
}

impl NetcodeEcho {
    async fn client(&self, lane: Lane) {
        let run = Rc::clone(&lane.run);
        let Some(schedule) = lane.schedule.clone() else {
            run.rec.borrow_mut().error("netcode_needs_rate");
            return;
        };
        let socket = match UdpSocket::bind(local_addr(self.addr, lane.index))
            .or_else(|_| UdpSocket::bind(any_addr(self.addr)))
            .and_then(|s| s.connect(self.addr).map(|()| s))
        {
            Ok(s) => s,
            Err(e) => {
                run.rec.borrow_mut().error(error_kind(&e));
                return;
            }
        };
        let token = self.issuer.issue(
            unix_now().as_secs(),
            &TokenRequest {
                client_id: self.id_base + lane.index as u64,
                server_addresses: &[self.addr],
                expire_seconds: 3600,
                timeout_seconds: 10,
                user_data: None,
            },
        );
        let token = match token {
            Ok(t) => t,
            Err(_) => {
                run.rec.borrow_mut().error("netcode_token");
                return;
            }
        };
        let session = Rc::new(Session {
            socket,
            // Cookies cost nothing against servers that never ask for them.
            client: RefCell::new(Client::new(token, Instant::now()).with_cookies()),
        });
        let deadline = Instant::now() + run.options.timeout;
        if !handshake(&session, deadline).await {
            run.rec.borrow_mut().error("netcode_connect");
            return;
        }
        let first = schedule.next();
        let template = template(lane.index, self.size);
        let sender = coring::spawn_local(send_loop(
            Rc::clone(&session),
            Rc::clone(&run),
            Rc::clone(&schedule),
            template.clone(),
        ))
        .cancel_on_drop();
        receive_loop(&session, &run, &schedule, first, &template).await;
        drop(sender);
    }
}

/// Sends what the state machine owes (requests, responses, keep-alives).
async fn flush(session: &Session) {
    let mut out = vec![0u8; MAX_PACKET_BYTES];
    loop {
        let Some(t) = session
            .client
            .borrow_mut()
            .poll_transmit(Instant::now(), &mut out)
        else {
            return;
        };
        out.truncate(t.len);
        let (_, back) = session.socket.send(out).await;
        out = back;
        out.resize(MAX_PACKET_BYTES, 0);
    }
}

/// Connects, or gives up at `deadline`.
async fn handshake(session: &Session, deadline: Instant) -> bool {
    let mut pooled = session.socket.pooled();
    loop {
        flush(session).await;
        let state = session.client.borrow().state();
        if state == ClientState::Connected {
            return true;
        }
        if !state.is_active() || Instant::now() >= deadline {
            return false;
        }
        let wake = session
            .client
            .borrow()
            .poll_timeout()
            .unwrap_or(deadline)
            .min(deadline);
        match timeout_at(wake, pooled.next()).await {
            Ok(Ok(mut d)) => {
                session.client.borrow_mut().handle_datagram(
                    Instant::now(),
                    d.source,
                    d.data.as_mut_slice(),
                );
            }
            Ok(Err(_)) => {}
            Err(_) => session.client.borrow_mut().handle_timeout(Instant::now()),
        }
    }
}

async fn send_loop(
    session: Rc<Session>,
    run: Rc<CoreRun>,
    schedule: Rc<Schedule>,
    mut payload: Vec<u8>,
) {
    let mut seq: u64 = 0;
    let mut out = vec![0u8; MAX_PACKET_BYTES];
    while let Some(due) = next_due(&run, &schedule).await {
        for _ in 0..due {
            let t = schedule.pop();
            payload[4..HEADER].copy_from_slice(&seq.to_le_bytes());
            seq += 1;
            out.resize(MAX_PACKET_BYTES, 0);
            let sealed = session
                .client
                .borrow_mut()
                .send(Instant::now(), &payload, &mut out);
            let Ok(transmit) = sealed else {
                run.rec.borrow_mut().error("netcode_disconnected");
                return;
            };
            out.truncate(transmit.len);
            let (result, back) = session.socket.send(out).await;
            out = back;
            record_sent(&run, t, payload.len(), result);
        }
    }
}

async fn receive_loop(
    session: &Session,
    run: &CoreRun,
    schedule: &Schedule,
    first: Instant,
    template: &[u8],
) {
    // Echoes still on their way when sending stops get this long to arrive.
    let grace = run.options.timeout.min(Duration::from_secs(1));
    let until = run.send_until + grace;
    let mut pooled = session.socket.pooled();
    let mut echoes = Echoes::new(template, first);
    loop {
        // Keep-alives, if the schedule is slower than the state machine's 10 Hz.
        flush(session).await;
        let wake = session
            .client
            .borrow()
            .poll_timeout()
            .unwrap_or(until)
            .min(until);
        let received = match timeout_at(wake, pooled.next()).await {
            Err(_) if Instant::now() >= until => return,
            Err(_) => {
                session.client.borrow_mut().handle_timeout(Instant::now());
                continue;
            }
            Ok(r) => r,
        };
        let now = Instant::now();
        let mut dgram = match received {
            Ok(d) => d,
            Err(e) => {
                run.rec.borrow_mut().error(error_kind(&e));
                continue;
            }
        };
        let mut client = session.client.borrow_mut();
        let Some(data) = client.handle_datagram(now, dgram.source, dgram.data.as_mut_slice())
        else {
            continue;
        };
        let counted = echoes.take(
            &mut run.rec.borrow_mut(),
            schedule,
            data,
            now,
            Unit::Payload,
        );
        drop(client);
        if counted {
            run.progress(1);
        }
    }
}
