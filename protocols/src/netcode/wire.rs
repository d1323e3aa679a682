//! Little-endian fields and server addresses, read from and written to byte slices.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Address type 1: IPv4, four bytes then the port.
const ADDRESS_IPV4: u8 = 1;
/// Address type 2: IPv6, eight 16-bit groups (each little endian) then the port.
const ADDRESS_IPV6: u8 = 2;
/// At most this many server addresses in a token.
pub const MAX_SERVER_ADDRESSES: usize = 32;

/// The field at the cursor runs past the end, or holds a value the format does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Reads fields front to back.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.bytes.len() < n {
            return Err(Malformed);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count in `[1, 32]` and that many addresses.
    pub(crate) fn addresses(&mut self) -> Result<Vec<SocketAddr>, Malformed> {
        let count = self.u32()? as usize;
        if count == 0 || count > MAX_SERVER_ADDRESSES {
            return Err(Malformed);
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let ip = match self.u8()? {
                ADDRESS_IPV4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
                ADDRESS_IPV6 => {
                    let mut groups = [0u16; 8];
                    for g in &mut groups {
                        *g = self.u16()?;
                    }
                    IpAddr::V6(Ipv6Addr::from(groups))
                }
                _ => return Err(Malformed),
            };
            out.push(SocketAddr::new(ip, self.u16()?));
        }
        Ok(out)
    }
}

/// Writes fields front to back into a buffer sized for them.
pub(crate) struct Writer<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        Writer { bytes, at: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.at
    }

    /// Writes `data`. The callers size their buffers for the largest message they write, so
    /// running out of room is a bug in this module, caught by its tests.
    pub(crate) fn put(&mut self, data: &[u8]) {
        self.bytes[self.at..self.at + data.len()].copy_from_slice(data);
        self.at += data.len();
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    pub(crate) fn i32(&mut self, v: i32) {
        self.put(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }

    /// The count, then each address. The caller has checked the count is in `[1, 32]`.
    pub(crate) fn addresses(&mut self, addresses: &[SocketAddr]) {
        self.u32(addresses.len() as u32);
        for addr in addresses {
            match addr.ip() {
                IpAddr::V4(ip) => {
                    self.put(&[ADDRESS_IPV4]);
                    self.put(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    self.put(&[ADDRESS_IPV6]);
                    for g in ip.segments() {
                        self.put(&g.to_le_bytes());
                    }
                }
            }
            self.put(&addr.port().to_le_bytes());
        }
    }
}

/// Bytes [`Writer::addresses`] takes for `addresses`.
#[cfg(test)]
fn addresses_len(addresses: &[SocketAddr]) -> usize {
    4 + addresses
        .iter()
        .map(|a| if a.is_ipv4() { 1 + 4 + 2 } else { 1 + 16 + 2 })
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_in_the_standards_layout() {
        let addrs: Vec<SocketAddr> = vec![
            "10.1.2.3:40000".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        ];
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.addresses(&addrs);
        let n = w.len();
        assert_eq!(n, addresses_len(&addrs));
        // Count 2, type 1, 10.1.2.3, port 40000 LE, type 2, first group 0x2001 LE.
        assert_eq!(
            buf[..14],
            [2, 0, 0, 0, 1, 10, 1, 2, 3, 0x40, 0x9c, 2, 0x01, 0x20]
        );
        assert_eq!(Reader::new(&buf[..n]).addresses().unwrap(), addrs);
    }

    #[test]
    fn bad_counts_types_and_truncation_are_malformed() {
        assert_eq!(Reader::new(&[0, 0, 0, 0]).addresses(), Err(Malformed));
        assert_eq!(Reader::new(&[33, 0, 0, 0]).addresses(), Err(Malformed));
        assert_eq!(
            Reader::new(&[1, 0, 0, 0, 3, 1, 2, 3, 4, 0, 0]).addresses(),
            Err(Malformed)
        );
        assert_eq!(
            Reader::new(&[1, 0, 0, 0, 1, 1, 2, 3]).addresses(),
            Err(Malformed)
        );
    }
}
