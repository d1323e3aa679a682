//! The PROXY protocol (versions 1 and 2, as HAProxy specifies them), sans-IO: the header a
//! load balancer sends first on a connection to say who its client is.
//!
//! [`decode`] reads a header from the start of a connection's bytes, whatever the split:
//! [`Decoded::Partial`] until the header is whole, then [`Decoded::Complete`] with the header
//! and its length (the bytes after it belong to the protocol that follows). Anything that is
//! not a well-formed header is a [`ProxyError`]: a listener that expects the header closes
//! such a connection. [`encode_v1`] and [`encode_v2`] write headers, for clients, proxies and
//! tests.
//!
//! A header is believed only from a trusted source (the serving layer checks the peer against
//! a list before it reads one): anyone else could claim any address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's first twelve bytes.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 1's longest line, CRLF included.
pub const V1_MAX: usize = 107;

/// The longest header [`decode`] reads unless told otherwise: version 2's address block for
/// Unix sockets (216 bytes) after its 16-byte prefix, and room for TLVs.
pub const DEFAULT_MAX: usize = 1024;

/// Which version a header was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// What the proxy says the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A connection the proxy made on its own (a health check): the real endpoints stand.
    Local,
    /// A client's connection relayed: the addresses are the client's and the one it reached.
    Proxy,
}

/// The transport the client used, as version 2 says it (version 1 says TCP or nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Not said (`UNKNOWN`, `LOCAL`, or family `AF_UNSPEC`).
    Unspecified,
    /// A stream (TCP).
    Stream,
    /// Datagrams (UDP).
    Datagram,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The version it came in.
    pub version: Version,
    /// A relayed connection, or the proxy's own.
    pub command: Command,
    /// The client's transport.
    pub transport: Transport,
    /// The client's address and the address it connected to, when the header carries IP
    /// addresses (not for `UNKNOWN`, `LOCAL`, `AF_UNSPEC` or Unix sockets).
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

impl Header {
    /// The client's address, if the header relays a client over IP: what the connection's
    /// peer address should be taken as. `None`: keep the real peer (the proxy's address).
    pub fn client(&self) -> Option<SocketAddr> {
        match self.command {
            Command::Proxy => self.addresses.map(|(source, _)| source),
            Command::Local => None,
        }
    }
}

/// Where [`decode`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A header may yet come: more bytes are needed.
    Partial,
    /// The header and how many bytes it took.
    Complete {
        /// The header.
        header: Header,
        /// Its length: the connection's own bytes start here.
        len: usize,
    },
}

/// A connection whose first bytes are not a well-formed PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes start with neither version's signature.
    #[error("no PROXY protocol header")]
    Missing,
    /// A version 1 line that does not follow the grammar.
    #[error("malformed PROXY v1 header: {0}")]
    MalformedV1(&'static str),
    /// A version 2 header with bad fields.
    #[error("malformed PROXY v2 header: {0}")]
    MalformedV2(&'static str),
    /// The header is longer than the listener allows.
    #[error("PROXY header of {len} bytes is over the limit of {max}")]
    TooLong {
        /// How long it says (version 2) or has grown without an end (version 1).
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Reads a header from the start of `bytes`, allowing headers up to `max` bytes (version 1
/// is held to its own 107 bytes whatever `max` is).
pub fn decode(bytes: &[u8], max: usize) -> Result<Decoded, ProxyError> {
    const V1_START: &[u8] = b"PROXY ";
    if bytes.len() < V1_START.len().min(V2_SIGNATURE.len()) {
        let could_be = V1_START.starts_with(bytes) || V2_SIGNATURE.starts_with(bytes);
        return if could_be {
            Ok(Decoded::Partial)
        } else {
            Err(ProxyError::Missing)
        };
    }
    if bytes.starts_with(V1_START) {
        return decode_v1(bytes);
    }
    let n = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError::Missing);
    }
    if n < V2_SIGNATURE.len() {
        return Ok(Decoded::Partial);
    }
    decode_v2(bytes, max)
}

fn decode_v1(bytes: &[u8]) -> Result<Decoded, ProxyError> {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if bytes.len() >= V1_MAX {
            return Err(ProxyError::TooLong {
                len: bytes.len(),
                max: V1_MAX,
            });
        }
        // No CRLF yet: a LF, or a CR with something other than LF after it, can never become
        // the line's end.
        let last = window.len() - 1;
        let stray = window
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' || (b == b'\r' && i < last));
        if stray {
            return Err(ProxyError::MalformedV1("stray CR or LF"));
        }
        return Ok(Decoded::Partial);
    };
    // What the prefix check above refuses, the whole line refuses too (an UNKNOWN line's rest
    // is ignored, but it is still one line).
    if window[..end].iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(ProxyError::MalformedV1("stray CR or LF"));
    }
    let line =
        std::str::from_utf8(&window[..end]).map_err(|_| ProxyError::MalformedV1("not ASCII"))?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let family = parts.next().ok_or(ProxyError::MalformedV1("no protocol"))?;
    let header = |transport, addresses| Header {
        version: Version::V1,
        command: Command::Proxy,
        transport,
        addresses,
    };
    let len = end + 2;
    match family {
        // The rest of an UNKNOWN line is to be ignored.
        "UNKNOWN" => Ok(Decoded::Complete {
            header: header(Transport::Unspecified, None),
            len,
        }),
        "TCP4" | "TCP6" => {
            let mut field = || {
                parts
                    .next()
                    .ok_or(ProxyError::MalformedV1("too few fields"))
            };
            let (src, dst, sport, dport) = (field()?, field()?, field()?, field()?);
            if parts.next().is_some() {
                return Err(ProxyError::MalformedV1("too many fields"));
            }
            let (src, dst) = if family == "TCP4" {
                (
                    v1_ip::<Ipv4Addr>(src)?.into(),
                    v1_ip::<Ipv4Addr>(dst)?.into(),
                )
            } else {
                (
                    v1_ip::<Ipv6Addr>(src)?.into(),
                    v1_ip::<Ipv6Addr>(dst)?.into(),
                )
            };
            let source = SocketAddr::new(src, v1_port(sport)?);
            let destination = SocketAddr::new(dst, v1_port(dport)?);
            Ok(Decoded::Complete {
                header: header(Transport::Stream, Some((source, destination))),
                len,
            })
        }
        _ => Err(ProxyError::MalformedV1(
            "protocol is not TCP4, TCP6 or UNKNOWN",
        )),
    }
}

fn v1_ip<T: std::str::FromStr>(s: &str) -> Result<T, ProxyError> {
    s.parse()
        .map_err(|_| ProxyError::MalformedV1("bad address"))
}

/// A port in decimal, 0–65535, without a sign or leading zeros.
fn v1_port(s: &str) -> Result<u16, ProxyError> {
    let bad = ProxyError::MalformedV1("bad port");
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(bad);
    }
    s.parse().map_err(|_| bad)
}

fn decode_v2(bytes: &[u8], max: usize) -> Result<Decoded, ProxyError> {
    if bytes.len() < 16 {
        return Ok(Decoded::Partial);
    }
    let version_command = bytes[12];
    if version_command >> 4 != 2 {
        return Err(ProxyError::MalformedV2("version is not 2"));
    }
    let command = match version_command & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        _ => return Err(ProxyError::MalformedV2("unknown command")),
    };
    let family = bytes[13] >> 4;
    let transport = match bytes[13] & 0x0f {
        0 => Transport::Unspecified,
        1 => Transport::Stream,
        2 => Transport::Datagram,
        _ => return Err(ProxyError::MalformedV2("unknown transport")),
    };
    let body_len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let len = 16 + body_len;
    if len > max {
        return Err(ProxyError::TooLong { len, max });
    }
    if bytes.len() < len {
        return Ok(Decoded::Partial);
    }
    let body = &bytes[16..len];
    let (addresses, block) = match family {
        0 => (None, 0),
        1 => {
            let block = body
                .get(..12)
                .ok_or(ProxyError::MalformedV2("IPv4 block cut short"))?;
            (Some(inet_pair::<4>(block)), 12)
        }
        2 => {
            let block = body
                .get(..36)
                .ok_or(ProxyError::MalformedV2("IPv6 block cut short"))?;
            (Some(inet_pair::<16>(block)), 36)
        }
        3 => {
            if body.len() < 216 {
                return Err(ProxyError::MalformedV2("Unix block cut short"));
            }
            (None, 216)
        }
        _ => return Err(ProxyError::MalformedV2("unknown address family")),
    };
    check_tlvs(&body[block..])?;
    // A LOCAL connection's addresses, if any, are not the client's.
    let addresses = match command {
        Command::Local => None,
        Command::Proxy => addresses,
    };
    Ok(Decoded::Complete {
        header: Header {
            version: Version::V2,
            command,
            transport,
            addresses,
        },
        len,
    })
}

/// An INET or INET6 address block (`2 * N + 4` bytes): source address, destination address,
/// source port, destination port, all in network order.
fn inet_pair<const N: usize>(block: &[u8]) -> (SocketAddr, SocketAddr)
where
    IpAddr: From<[u8; N]>,
{
    let ip = |at: usize| {
        let mut octets = [0u8; N];
        octets.copy_from_slice(&block[at..at + N]);
        IpAddr::from(octets)
    };
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    (
        SocketAddr::new(ip(0), port(2 * N)),
        SocketAddr::new(ip(N), port(2 * N + 2)),
    )
}

/// The TLVs after the address block must tile it exactly: type, 16-bit length, value.
fn check_tlvs(mut rest: &[u8]) -> Result<(), ProxyError> {
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(ProxyError::MalformedV2("TLV cut short"));
        }
        let n = 3 + usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        rest = rest
            .get(n..)
            .ok_or(ProxyError::MalformedV2("TLV longer than the header"))?;
    }
    Ok(())
}

/// Writes a version 1 line for a TCP client at `source` that reached `destination` (both of
/// one family; mixed families are written as `UNKNOWN`).
pub fn encode_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    use std::io::Write;
    let line = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
        }
        _ => "PROXY UNKNOWN\r\n".to_string(),
    };
    let _ = out.write_all(line.as_bytes());
}

/// Writes a version 2 header: `Some((source, destination))` relays a TCP client (both of one
/// family, else the addresses are left out as `AF_UNSPEC`); `None` is a `LOCAL` connection.
pub fn encode_v2(addresses: Option<(SocketAddr, SocketAddr)>, out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    let Some((source, destination)) = addresses else {
        out.extend_from_slice(&[0x20, 0x00, 0, 0]);
        return;
    };
    let (family, block): (u8, u16) = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => (0x11, 12),
        (SocketAddr::V6(_), SocketAddr::V6(_)) => (0x21, 36),
        _ => {
            out.extend_from_slice(&[0x21, 0x00, 0, 0]);
            return;
        }
    };
    out.extend_from_slice(&[0x21, family]);
    out.extend_from_slice(&block.to_be_bytes());
    for ip in [source.ip(), destination.ip()] {
        match ip {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Every prefix shorter than the header is `Partial`; the whole, with `rest` after it,
    /// is `Complete` with the header's length.
    fn at_every_split(header: &[u8], rest: &[u8]) -> Header {
        for cut in 0..header.len() {
            assert_eq!(
                decode(&header[..cut], DEFAULT_MAX),
                Ok(Decoded::Partial),
                "cut at {cut} of {header:?}"
            );
        }
        let mut all = header.to_vec();
        all.extend_from_slice(rest);
        match decode(&all, DEFAULT_MAX) {
            Ok(Decoded::Complete { header: h, len }) => {
                assert_eq!(len, header.len());
                h
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn version_1_lines_decode_at_every_split() {
        let h = at_every_split(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n", b"GET /");
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.client(), Some(addr("192.0.2.7:56324")));
        assert_eq!(
            h.addresses,
            Some((addr("192.0.2.7:56324"), addr("198.51.100.1:443")))
        );
        let h = at_every_split(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n", b"");
        assert_eq!(h.client(), Some(addr("[2001:db8::1]:65535")));
        let h = at_every_split(b"PROXY UNKNOWN whatever follows\r\n", b"x");
        assert_eq!((h.client(), h.transport), (None, Transport::Unspecified));
        let h = at_every_split(b"PROXY UNKNOWN\r\n", b"");
        assert_eq!(h.client(), None);
    }

    #[test]
    fn version_2_headers_decode_at_every_split() {
        let (c4, s4) = (addr("203.0.113.9:40000"), addr("127.0.0.1:8080"));
        let mut v4 = Vec::new();
        encode_v2(Some((c4, s4)), &mut v4);
        let h = at_every_split(&v4, b"\x16\x03\x01");
        assert_eq!((h.version, h.command), (Version::V2, Command::Proxy));
        assert_eq!(
            (h.transport, h.addresses),
            (Transport::Stream, Some((c4, s4)))
        );

        let (c6, s6) = (addr("[2001:db8::7]:1"), addr("[::1]:443"));
        let mut v6 = Vec::new();
        encode_v2(Some((c6, s6)), &mut v6);
        assert_eq!(at_every_split(&v6, b"").client(), Some(c6));

        let mut local = Vec::new();
        encode_v2(None, &mut local);
        let h = at_every_split(&local, b"GET");
        assert_eq!((h.command, h.client()), (Command::Local, None));

        // TLVs after the block (ALPN "h2", then a NOOP of three bytes) are stepped over.
        let mut tlv = V2_SIGNATURE.to_vec();
        tlv.extend_from_slice(&[0x21, 0x11, 0, 12 + 5 + 6]);
        tlv.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 80]);
        tlv.extend_from_slice(&[0x01, 0, 2, b'h', b'2', 0x04, 0, 3, 0, 0, 0]);
        assert_eq!(
            at_every_split(&tlv, b"").client(),
            Some(addr("10.0.0.1:12345"))
        );

        // A LOCAL header that carries addresses anyway: they are not the client's.
        let mut local4 = v4.clone();
        local4[12] = 0x20;
        assert_eq!(at_every_split(&local4, b"").client(), None);
    }

    #[test]
    fn what_is_not_a_header_is_refused_early() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"G",
            b"proxy TCP4",
            b"PROXY\r\n",
            b"\r\n\r\n\0\r\nQUIT!",
        ] {
            assert_eq!(
                decode(bytes, DEFAULT_MAX),
                Err(ProxyError::Missing),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn malformed_version_1_lines_are_refused() {
        for line in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 9\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 192.0.2.8 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 065 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 443\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 1 443\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 443\r\n",
            b"PROXY TCP4 192.0.2.7\n",
            b"PROXY TCP4 192.0.2.7\rx",
            b"PROXY UNKNOWN a\rb\r\n",
            b"PROXY UNKNOWN a\nb\r\n",
        ] {
            assert!(
                matches!(decode(line, DEFAULT_MAX), Err(ProxyError::MalformedV1(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(line),
                decode(line, DEFAULT_MAX)
            );
        }
        let endless = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100]].concat();
        assert_eq!(
            decode(&endless, DEFAULT_MAX),
            Err(ProxyError::TooLong {
                len: endless.len(),
                max: V1_MAX
            })
        );
    }

    #[test]
    fn malformed_version_2_headers_are_refused() {
        let mut good = Vec::new();
        encode_v2(Some((addr("10.0.0.1:1"), addr("10.0.0.2:2"))), &mut good);
        let with = |at: usize, byte: u8| {
            let mut h = good.clone();
            h[at] = byte;
            h
        };
        for bad in [
            with(12, 0x11), // version 1 in the binary form
            with(12, 0x22), // command 2
            with(13, 0x41), // family 4
            with(13, 0x13), // transport 3
            with(15, 11),   // IPv4 block of 11 bytes
        ] {
            let cut = 16 + usize::from(bad[15]);
            assert!(
                matches!(
                    decode(&bad[..cut], DEFAULT_MAX),
                    Err(ProxyError::MalformedV2(_))
                ),
                "{bad:?}"
            );
        }
        // Two bytes after the block: no room for a TLV's length.
        let mut h = with(15, 14);
        h.extend_from_slice(&[0x04, 0]);
        assert!(matches!(
            decode(&h, DEFAULT_MAX),
            Err(ProxyError::MalformedV2(_))
        ));
        // A TLV that says it runs past the header.
        let mut h = good.clone();
        h[15] = 12 + 3;
        h.extend_from_slice(&[0x04, 0, 9]);
        assert!(matches!(
            decode(&h, DEFAULT_MAX),
            Err(ProxyError::MalformedV2(_))
        ));
        // Longer than the listener allows: refused from the length alone.
        let mut long = good[..16].to_vec();
        long[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(
            decode(&long, DEFAULT_MAX),
            Err(ProxyError::TooLong {
                len: 2016,
                max: DEFAULT_MAX
            })
        );
    }

    #[test]
    fn version_1_lines_written_read_back() {
        for (s, d) in [
            (addr("192.0.2.7:56324"), addr("198.51.100.1:443")),
            (addr("[2001:db8::1]:9"), addr("[::1]:80")),
        ] {
            let mut out = Vec::new();
            encode_v1(s, d, &mut out);
            assert!(out.len() <= V1_MAX);
            assert_eq!(at_every_split(&out, b"").addresses, Some((s, d)));
        }
        let mut out = Vec::new();
        encode_v1(addr("192.0.2.7:1"), addr("[::1]:80"), &mut out);
        assert_eq!(out, b"PROXY UNKNOWN\r\n");
    }
}
