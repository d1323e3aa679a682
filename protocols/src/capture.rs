//! Traffic capture: the bytes a server's connections carry, written to a pcapng file that
//! Wireshark and `tshark` read as ordinary TCP (a handshake, numbered segments, a close), so
//! their dissectors (HTTP, WebSocket) work on it.
//!
//! What is captured is what the application reads and writes: over TLS, the decrypted bytes;
//! behind a PROXY listener, the bytes after the header. The IP and TCP headers are made up
//! from the connection's addresses (the packets on the wire were cut differently, and their
//! options, windows and retransmissions are not seen). Bodies sent straight from a file
//! (`serve_file`, by splice or sendfile) are not copied through user space and so appear as
//! a gap of their length.
//!
//! Recording is cheap for the connection (one copy into a bounded queue); a thread of the
//! capture's own encodes and writes. When the queue is full a record is dropped, never
//! waited for: its bytes become a gap in the stream (what Wireshark calls "previous segment
//! not captured") and [`Capture::lost_bytes`] counts them.
//!
//! The format pieces are sans-IO: [`pcapng`] writes blocks, [`TcpFlow`] makes the packets of
//! one connection.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::SystemTime;

/// Records queued for the writer at most; beyond, records are dropped and counted.
pub const QUEUE_RECORDS: usize = 8192;

/// The largest TCP payload per made-up segment (an IPv4 packet's length is 16 bits).
pub const SEGMENT_BYTES: usize = 32 * 1024;

/// pcapng blocks (the file format Wireshark writes), little-endian.
pub mod pcapng {
    /// `LINKTYPE_RAW`: packets start with their IPv4 or IPv6 header.
    pub const LINKTYPE_RAW: u16 = 101;

    fn block(kind: u32, body: &[u8], out: &mut Vec<u8>) {
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(body);
        out.resize(out.len() + padded - body.len(), 0);
        out.extend_from_slice(&total.to_le_bytes());
    }

    /// A section header: the start of a file.
    pub fn section_header(out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        // Section length not given.
        body.extend_from_slice(&(-1i64).to_le_bytes());
        block(0x0A0D_0D0A, &body, out);
    }

    /// An interface description (interface 0, microsecond timestamps).
    pub fn interface(linktype: u16, snaplen: u32, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(8);
        body.extend_from_slice(&linktype.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&snaplen.to_le_bytes());
        block(1, &body, out);
    }

    /// An enhanced packet on interface 0 at `micros` since the Unix epoch.
    pub fn packet(micros: u64, data: &[u8], out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(20 + data.len());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&((micros >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(micros as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        block(6, &body, out);
    }
}

/// TCP flags the made-up segments use.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// One connection's packets: a handshake, data each way with its sequence numbers, a close.
#[derive(Clone, Debug)]
pub struct TcpFlow {
    client: SocketAddr,
    server: SocketAddr,
    /// The next sequence number each side sends.
    client_seq: u32,
    server_seq: u32,
}

impl TcpFlow {
    /// A flow between `client` and `server` (an IPv4 address facing an IPv6 one is written
    /// IPv4-mapped).
    pub fn new(client: SocketAddr, server: SocketAddr) -> TcpFlow {
        let (client, server) = match (client.ip(), server.ip()) {
            (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => {
                (mapped(client), mapped(server))
            }
            _ => (client, server),
        };
        TcpFlow {
            client,
            server,
            client_seq: 1_000,
            server_seq: 500_000,
        }
    }

    /// The three packets of the handshake.
    pub fn open(&mut self, mut each: impl FnMut(&[u8])) {
        let (c, s) = (self.client_seq, self.server_seq);
        each(&self.segment(true, SYN, c, 0, &[]));
        each(&self.segment(false, SYN | ACK, s, c + 1, &[]));
        self.client_seq += 1;
        self.server_seq += 1;
        each(&self.segment(true, ACK, self.client_seq, self.server_seq, &[]));
    }

    /// `data` from one side, in segments of at most [`SEGMENT_BYTES`], after `skipped` bytes
    /// that were not captured.
    pub fn data(
        &mut self,
        from_client: bool,
        skipped: u64,
        data: &[u8],
        mut each: impl FnMut(&[u8]),
    ) {
        let seq = if from_client {
            &mut self.client_seq
        } else {
            &mut self.server_seq
        };
        *seq = seq.wrapping_add(skipped as u32);
        for piece in data.chunks(SEGMENT_BYTES) {
            let (seq, ack) = if from_client {
                (self.client_seq, self.server_seq)
            } else {
                (self.server_seq, self.client_seq)
            };
            each(&self.segment(from_client, PSH | ACK, seq, ack, piece));
            if from_client {
                self.client_seq = self.client_seq.wrapping_add(piece.len() as u32);
            } else {
                self.server_seq = self.server_seq.wrapping_add(piece.len() as u32);
            }
        }
    }

    /// The close: the server's FIN, the client's, the last ACK.
    pub fn close(&mut self, mut each: impl FnMut(&[u8])) {
        each(&self.segment(false, FIN | ACK, self.server_seq, self.client_seq, &[]));
        self.server_seq = self.server_seq.wrapping_add(1);
        each(&self.segment(true, FIN | ACK, self.client_seq, self.server_seq, &[]));
        self.client_seq = self.client_seq.wrapping_add(1);
        each(&self.segment(false, ACK, self.server_seq, self.client_seq, &[]));
    }

    /// One IP packet carrying one TCP segment.
    fn segment(&self, from_client: bool, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let (src, dst) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let mut tcp = Vec::with_capacity(20 + payload.len());
        tcp.extend_from_slice(&src.port().to_be_bytes());
        tcp.extend_from_slice(&dst.port().to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&(if flags & ACK != 0 { ack } else { 0 }).to_be_bytes());
        tcp.push(5 << 4);
        tcp.push(flags);
        tcp.extend_from_slice(&u16::MAX.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        tcp.extend_from_slice(payload);
        let mut packet = Vec::with_capacity(40 + tcp.len());
        let mut pseudo = Vec::with_capacity(40);
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = (20 + tcp.len()) as u16;
                packet.extend_from_slice(&[0x45, 0]);
                packet.extend_from_slice(&total.to_be_bytes());
                packet.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
                packet.extend_from_slice(&s.octets());
                packet.extend_from_slice(&d.octets());
                let sum = checksum(&[&packet[..20]]);
                packet[10..12].copy_from_slice(&sum.to_be_bytes());
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, 6]);
                pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            }
            (s, d) => {
                let (s, d) = (v6(s), v6(d));
                packet.extend_from_slice(&[0x60, 0, 0, 0]);
                packet.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                packet.extend_from_slice(&[6, 64]);
                packet.extend_from_slice(&s.octets());
                packet.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 6]);
            }
        }
        let sum = checksum(&[&pseudo, &tcp]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        packet.extend_from_slice(&tcp);
        packet
    }
}

fn mapped(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(v6(addr.ip())), addr.port())
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The Internet checksum of the concatenated `parts`.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(hi) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// What the server tells the writer.
enum Record {
    Open {
        id: u64,
        client: SocketAddr,
        server: SocketAddr,
        at: u64,
    },
    Data {
        id: u64,
        from_client: bool,
        skipped: u64,
        bytes: Vec<u8>,
        at: u64,
    },
    Close {
        id: u64,
        at: u64,
    },
}

struct Shared {
    /// The writer thread, joined by [`Capture::finish`].
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    next_id: AtomicU64,
    lost_bytes: AtomicU64,
    lost_records: AtomicU64,
}

/// A capture to one pcapng file, shared by every connection (and core) that records into it.
/// Set it on a server with `serve::Config::capture`. The file is complete once every clone
/// is dropped and the writer has caught up.
#[derive(Clone)]
pub struct Capture {
    tx: mpsc::SyncSender<Record>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("lost_bytes", &self.lost_bytes())
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Starts a capture into a new pcapng file at `path` (replacing one already there),
    /// written by a thread of its own.
    pub fn to_file(path: impl AsRef<std::path::Path>) -> std::io::Result<Capture> {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut head = Vec::new();
        pcapng::section_header(&mut head);
        pcapng::interface(pcapng::LINKTYPE_RAW, 65_535, &mut head);
        file.write_all(&head)?;
        file.flush()?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_RECORDS);
        let writer = std::thread::Builder::new()
            .name("coring-capture".into())
            .spawn(move || write_records(rx, file))?;
        Ok(Capture {
            tx,
            shared: Arc::new(Shared {
                writer: std::sync::Mutex::new(Some(writer)),
                next_id: AtomicU64::new(1),
                lost_bytes: AtomicU64::new(0),
                lost_records: AtomicU64::new(0),
            }),
        })
    }

    /// Lets go of this handle; if it was the last one (every connection that recorded into
    /// it is gone too), waits until the writer has written everything and closed the file.
    /// A program that ends with `std::process::exit` calls this first.
    pub fn finish(self) {
        let shared = Arc::clone(&self.shared);
        drop(self);
        if Arc::strong_count(&shared) == 1 {
            let writer = shared
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(writer) = writer {
                let _ = writer.join();
            }
        }
    }

    /// Bytes not captured because the writer fell behind.
    pub fn lost_bytes(&self) -> u64 {
        self.shared.lost_bytes.load(Ordering::Relaxed)
    }

    /// Starts recording a connection between `client` and `server`.
    pub fn connection(&self, client: SocketAddr, server: SocketAddr) -> Tap {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let opened = self
            .tx
            .try_send(Record::Open {
                id,
                client,
                server,
                at: micros_now(),
            })
            .is_ok();
        if !opened {
            self.shared.lost_records.fetch_add(1, Ordering::Relaxed);
        }
        Tap {
            capture: self.clone(),
            id,
            opened,
            skipped: [0, 0],
        }
    }
}

/// One connection's recording; its close is recorded when it is dropped.
pub struct Tap {
    capture: Capture,
    id: u64,
    /// Whether the writer knows this connection (its opening was queued).
    opened: bool,
    /// Bytes lost since the last record that got through, client's and server's.
    skipped: [u64; 2],
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("id", &self.id).finish()
    }
}

impl Tap {
    /// Bytes the client sent (what the server read).
    pub fn received(&mut self, bytes: &[u8]) {
        self.record(true, bytes);
    }

    /// Bytes the server sent.
    pub fn sent(&mut self, bytes: &[u8]) {
        self.record(false, bytes);
    }

    /// Bytes the server sent without copying them through user space (a file spliced to the
    /// socket): a gap of their length.
    pub fn sent_uncaptured(&mut self, len: u64) {
        self.skipped[1] += len;
    }

    fn record(&mut self, from_client: bool, bytes: &[u8]) {
        if !self.opened || bytes.is_empty() {
            return;
        }
        let side = usize::from(!from_client);
        let record = Record::Data {
            id: self.id,
            from_client,
            skipped: self.skipped[side],
            bytes: bytes.to_vec(),
            at: micros_now(),
        };
        match self.capture.tx.try_send(record) {
            Ok(()) => self.skipped[side] = 0,
            Err(_) => {
                self.skipped[side] += bytes.len() as u64;
                let shared = &self.capture.shared;
                shared
                    .lost_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if shared.lost_records.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("capture: the writer fell behind; bytes are left out");
                }
            }
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if self.opened {
            let at = micros_now();
            // A close that does not fit leaves the flow open in the file; nothing else is lost.
            let _ = self.capture.tx.try_send(Record::Close { id: self.id, at });
        }
    }
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The writer thread: encodes records as they come and writes them, flushing whenever it
/// has caught up.
fn write_records(rx: mpsc::Receiver<Record>, mut file: std::io::BufWriter<std::fs::File>) {
    use std::io::Write;
    let mut flows = std::collections::HashMap::new();
    let mut out = Vec::new();
    let mut encode = |record: Record, out: &mut Vec<u8>| match record {
        Record::Open {
            id,
            client,
            server,
            at,
        } => {
            let mut flow = TcpFlow::new(client, server);
            flow.open(|p| pcapng::packet(at, p, out));
            flows.insert(id, flow);
        }
        Record::Data {
            id,
            from_client,
            skipped,
            bytes,
            at,
        } => {
            if let Some(flow) = flows.get_mut(&id) {
                flow.data(from_client, skipped, &bytes, |p| pcapng::packet(at, p, out));
            }
        }
        Record::Close { id, at } => {
            if let Some(mut flow) = flows.remove(&id) {
                flow.close(|p| pcapng::packet(at, p, out));
            }
        }
    };
    while let Ok(first) = rx.recv() {
        encode(first, &mut out);
        while let Ok(more) = rx.try_recv() {
            encode(more, &mut out);
            if out.len() > 1 << 20 {
                break;
            }
        }
        if file.write_all(&out).and_then(|()| file.flush()).is_err() {
            tracing::warn!("capture: writing the file failed; the capture stops");
            return;
        }
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_padded_and_framed() {
        let mut out = Vec::new();
        pcapng::section_header(&mut out);
        assert_eq!(out.len(), 28);
        assert_eq!(&out[..4], &[0x0A, 0x0D, 0x0D, 0x0A]);
        assert_eq!(&out[4..8], &28u32.to_le_bytes());
        assert_eq!(&out[24..28], &28u32.to_le_bytes());
        out.clear();
        pcapng::packet(1, &[1, 2, 3], &mut out);
        assert_eq!(out.len(), 12 + 20 + 4);
        assert_eq!(&out[out.len() - 4..], &36u32.to_le_bytes());
    }

    #[test]
    fn segments_carry_sequence_numbers_and_checksums_that_verify() {
        let mut flow = TcpFlow::new(
            "192.0.2.1:40000".parse().unwrap(),
            "192.0.2.2:80".parse().unwrap(),
        );
        let mut packets = Vec::new();
        flow.open(|p| packets.push(p.to_vec()));
        flow.data(true, 0, b"GET / HTTP/1.1\r\n\r\n", |p| {
            packets.push(p.to_vec())
        });
        flow.data(false, 5, &vec![b'x'; SEGMENT_BYTES + 1], |p| {
            packets.push(p.to_vec())
        });
        flow.close(|p| packets.push(p.to_vec()));
        assert_eq!(packets.len(), 3 + 1 + 2 + 3);
        for p in &packets {
            // The IPv4 header and the TCP segment (with its pseudo-header) sum to zero.
            assert_eq!(checksum(&[&p[..20]]), 0);
            let tcp = &p[20..];
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&p[12..20]);
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            assert_eq!(checksum(&[&pseudo, tcp]), 0);
        }
        let seq = |p: &[u8]| u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
        // The request starts right after the SYN; the answer's second segment follows its
        // first, after the 5 bytes left out.
        assert_eq!(seq(&packets[3]), 1_001);
        assert_eq!(seq(&packets[4]), 500_001 + 5);
        assert_eq!(seq(&packets[5]), 500_001 + 5 + SEGMENT_BYTES as u32);
    }

    #[test]
    fn an_ipv4_peer_of_an_ipv6_listener_is_written_mapped() {
        let mut flow = TcpFlow::new("192.0.2.1:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        let mut first = Vec::new();
        flow.open(|p| {
            if first.is_empty() {
                first = p.to_vec()
            }
        });
        assert_eq!(first[0] >> 4, 6);
    }
}
