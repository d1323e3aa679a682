//! Network-change events: links going up and down, addresses added and removed, the default
//! route changing, read from the kernel's rtnetlink messages on Linux.
//!
//! [`Links`] reads the messages (sans-IO: bytes in, [`NetEvent`]s out), remembering each link's
//! name and state so that a link reports `up` only when it changes, and an address or route
//! names its link. [`NetworkChanges`] (feature `engine`) is the stream on a core: a netlink
//! socket subscribed to the link, IPv4/IPv6 address and IPv4/IPv6 route groups, first asked for
//! the links there are (so their states are known before the first change). Messages lost to a
//! full socket buffer are reported as [`NetEvent::Overflow`] and the links asked for again.
//! Elsewhere [`NetworkChanges::watch`] is `Unsupported`, with the reason.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A change in the host's network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// A link appeared or its state changed: `up` is administratively up with a carrier
    /// (`IFF_UP` and `IFF_RUNNING`).
    Link { index: u32, name: String, up: bool },
    /// A link was removed.
    LinkRemoved { index: u32, name: String },
    /// An address was added to link `index`.
    AddressAdded {
        index: u32,
        addr: IpAddr,
        prefix: u8,
    },
    /// An address was removed from link `index`.
    AddressRemoved {
        index: u32,
        addr: IpAddr,
        prefix: u8,
    },
    /// A default route of the main table appeared (`added`) or went away: its gateway, if it
    /// has one, and its link.
    DefaultRoute {
        added: bool,
        gateway: Option<IpAddr>,
        index: Option<u32>,
    },
    /// Messages were lost (the socket's buffer overflowed): what was known is stale; the
    /// links are asked for again and their states reported anew.
    Overflow,
}

/// Why a message could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetlinkError {
    /// A length field points outside the datagram, or a header is cut short.
    #[error("malformed netlink message: {0}")]
    Malformed(&'static str),
    /// The kernel answered a request with an error (a negative errno).
    #[error("netlink request failed: errno {0}")]
    Request(i32),
}

// Message types and constants from <linux/netlink.h> and <linux/rtnetlink.h>.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const IFF_UP: u32 = 0x1;
const IFF_RUNNING: u32 = 0x40;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The multicast groups [`NetworkChanges`] joins: links, IPv4 and IPv6 addresses, IPv4 and
/// IPv6 routes (`RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR |
/// RTMGRP_IPV6_ROUTE`).
pub const GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;

/// A request for every link (`RTM_GETLINK` with `NLM_F_DUMP`), numbered `seq`.
pub fn dump_links_request(seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 16;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifinfomsg, all zero: every family, every link.
    out.extend_from_slice(&[0; 16]);
    out
}

/// What is known of the host's links, and the reader of rtnetlink messages.
#[derive(Debug, Default)]
pub struct Links {
    links: HashMap<u32, (String, bool)>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes (`struct rtattr`: length, type, value) in `b`.
fn attributes(mut b: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NetlinkError>> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let (len, kind) = (u16_at(b, 0)? as usize, u16_at(b, 2)?);
        if len < 4 || len > b.len() {
            b = &[];
            return Some(Err(NetlinkError::Malformed("attribute length")));
        }
        let value = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some(Ok((kind, value)))
    })
}

fn ip_of(family: u8, value: &[u8]) -> Option<IpAddr> {
    match (family, value.len()) {
        (AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?))),
        (AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(value).ok()?,
        ))),
        _ => None,
    }
}

impl Links {
    /// An empty view: every link is new.
    pub fn new() -> Links {
        Links::default()
    }

    /// The name last seen for link `index`.
    pub fn name(&self, index: u32) -> Option<&str> {
        self.links.get(&index).map(|(name, _)| name.as_str())
    }

    /// Forgets what was known (after lost messages), so the next dump reports every link.
    pub fn forget(&mut self) {
        self.links.clear();
    }

    /// Reads one datagram of netlink messages, appending the changes it says to `events`.
    /// Messages of other types are skipped; a malformed one ends the datagram with an error
    /// (the events before it are kept).
    pub fn read(
        &mut self,
        mut datagram: &[u8],
        events: &mut Vec<NetEvent>,
    ) -> Result<(), NetlinkError> {
        while datagram.len() >= NLMSG_HDRLEN {
            let len = u32_at(datagram, 0).unwrap_or(0) as usize;
            let kind = u16_at(datagram, 4).unwrap_or(0);
            if len < NLMSG_HDRLEN || len > datagram.len() {
                return Err(NetlinkError::Malformed("message length"));
            }
            let body = &datagram[NLMSG_HDRLEN..len];
            match kind {
                NLMSG_NOOP | NLMSG_DONE => {}
                NLMSG_ERROR => {
                    let errno =
                        u32_at(body, 0).ok_or(NetlinkError::Malformed("error message"))? as i32;
                    // errno 0 is an acknowledgement.
                    if errno != 0 {
                        return Err(NetlinkError::Request(errno));
                    }
                }
                RTM_NEWLINK | RTM_DELLINK => self.link(kind == RTM_NEWLINK, body, events)?,
                RTM_NEWADDR | RTM_DELADDR => address(kind == RTM_NEWADDR, body, events)?,
                RTM_NEWROUTE | RTM_DELROUTE => route(kind == RTM_NEWROUTE, body, events)?,
                _ => {}
            }
            datagram = &datagram[align4(len).min(datagram.len())..];
        }
        Ok(())
    }

    fn link(
        &mut self,
        new: bool,
        body: &[u8],
        events: &mut Vec<NetEvent>,
    ) -> Result<(), NetlinkError> {
        if body.len() < 16 {
            return Err(NetlinkError::Malformed("ifinfomsg"));
        }
        let index = u32_at(body, 4).unwrap_or(0);
        let flags = u32_at(body, 8).unwrap_or(0);
        let mut name = None;
        for attr in attributes(&body[16..]) {
            let (kind, value) = attr?;
            if kind == IFLA_IFNAME {
                let value = value.split(|b| *b == 0).next().unwrap_or(value);
                name = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        let known = self.links.get(&index).cloned();
        let name = name
            .or_else(|| known.as_ref().map(|(n, _)| n.clone()))
            .unwrap_or_else(|| format!("#{index}"));
        if !new {
            self.links.remove(&index);
            events.push(NetEvent::LinkRemoved { index, name });
            return Ok(());
        }
        let up = flags & IFF_UP != 0 && flags & IFF_RUNNING != 0;
        let changed = match &known {
            Some((old_name, old_up)) => *old_up != up || *old_name != name,
            None => true,
        };
        self.links.insert(index, (name.clone(), up));
        if changed {
            events.push(NetEvent::Link { index, name, up });
        }
        Ok(())
    }
}

fn address(new: bool, body: &[u8], events: &mut Vec<NetEvent>) -> Result<(), NetlinkError> {
    if body.len() < 8 {
        return Err(NetlinkError::Malformed("ifaddrmsg"));
    }
    let (family, prefix) = (body[0], body[1]);
    let index = u32_at(body, 4).unwrap_or(0);
    let (mut local, mut address) = (None, None);
    for attr in attributes(&body[8..]) {
        let (kind, value) = attr?;
        match kind {
            IFA_LOCAL => local = ip_of(family, value),
            IFA_ADDRESS => address = ip_of(family, value),
            _ => {}
        }
    }
    // On a point-to-point link IFA_ADDRESS is the peer's; IFA_LOCAL is ours when present.
    if let Some(addr) = local.or(address) {
        events.push(if new {
            NetEvent::AddressAdded {
                index,
                addr,
                prefix,
            }
        } else {
            NetEvent::AddressRemoved {
                index,
                addr,
                prefix,
            }
        });
    }
    Ok(())
}

fn route(new: bool, body: &[u8], events: &mut Vec<NetEvent>) -> Result<(), NetlinkError> {
    if body.len() < 12 {
        return Err(NetlinkError::Malformed("rtmsg"));
    }
    let (family, dst_len, table, kind) = (body[0], body[1], u32::from(body[4]), body[7]);
    let (mut table_attr, mut gateway, mut index) = (None, None, None);
    for attr in attributes(&body[12..]) {
        let (attr_kind, value) = attr?;
        match attr_kind {
            RTA_TABLE => table_attr = u32_at(value, 0),
            RTA_GATEWAY => gateway = ip_of(family, value),
            RTA_OIF => index = u32_at(value, 0),
            _ => {}
        }
    }
    if dst_len == 0 && kind == RTN_UNICAST && table_attr.unwrap_or(table) == RT_TABLE_MAIN {
        events.push(NetEvent::DefaultRoute {
            added: new,
            gateway,
            index,
        });
    }
    Ok(())
}

#[cfg(all(feature = "engine", target_os = "linux"))]
mod watch {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::task::{Context, Poll};

    use super::*;
    use coring::net::{NETLINK_ROUTE, NetlinkSocket, RecvMeta};

    type Receiving = Pin<Box<dyn Future<Output = (coring::Result<RecvMeta<u32>>, Vec<u8>)>>>;
    type Asking = Pin<Box<dyn Future<Output = coring::Result<()>>>>;

    /// ENOBUFS (<asm-generic/errno.h>): the receive buffer overflowed.
    const ENOBUFS: i32 = 105;

    /// Network changes as they happen, on the core that made it: a [`Stream`] of
    /// [`NetEvent`]s, or [`NetworkChanges::next`]. Both are cancel-safe: the receive in
    /// flight is kept across calls, so a `next()` dropped by a timeout loses nothing.
    ///
    /// [`Stream`]: futures_core::Stream
    pub struct NetworkChanges {
        socket: Rc<NetlinkSocket>,
        links: Links,
        queued: VecDeque<NetEvent>,
        seq: u32,
        dump_wanted: bool,
        asking: Option<Asking>,
        receiving: Option<Receiving>,
    }

    impl std::fmt::Debug for NetworkChanges {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("NetworkChanges")
                .field("links", &self.links)
                .field("queued", &self.queued.len())
                .finish_non_exhaustive()
        }
    }

    impl NetworkChanges {
        /// Subscribes to the kernel's link, address and route changes and asks for the links
        /// there are: each is reported once as a [`NetEvent::Link`] before any change.
        pub fn watch() -> coring::Result<NetworkChanges> {
            let socket = NetlinkSocket::bind(NETLINK_ROUTE, GROUPS)?;
            // Room for bursts (a link going down takes its addresses and routes with it).
            let _ = socket.set_recv_buffer_size(1 << 20);
            Ok(NetworkChanges {
                socket: Rc::new(socket),
                links: Links::new(),
                queued: VecDeque::new(),
                seq: 0,
                dump_wanted: true,
                asking: None,
                receiving: None,
            })
        }

        /// What is known of the links now.
        pub fn links(&self) -> &Links {
            &self.links
        }

        /// The next change. Errors are the socket's own; a malformed message is skipped
        /// (logged), never an error.
        pub async fn next(&mut self) -> coring::Result<NetEvent> {
            match std::future::poll_fn(|cx| self.poll_event(cx)).await {
                Some(event) => event,
                None => Err(coring::Error::new(
                    coring::ErrorKind::Other,
                    "network-change events ended",
                )),
            }
        }

        fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<coring::Result<NetEvent>>> {
            loop {
                if let Some(event) = self.queued.pop_front() {
                    return Poll::Ready(Some(Ok(event)));
                }
                if self.dump_wanted && self.asking.is_none() {
                    self.dump_wanted = false;
                    self.seq = self.seq.wrapping_add(1);
                    let (socket, request) = (Rc::clone(&self.socket), dump_links_request(self.seq));
                    self.asking =
                        Some(Box::pin(
                            async move { socket.send(request).await.0.map(|_| ()) },
                        ));
                }
                if let Some(asking) = self.asking.as_mut()
                    && let Poll::Ready(sent) = asking.as_mut().poll(cx)
                {
                    self.asking = None;
                    if let Err(e) = sent {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                let socket = &self.socket;
                let receiving = self.receiving.get_or_insert_with(|| {
                    let socket = Rc::clone(socket);
                    Box::pin(async move { socket.recv(Vec::with_capacity(64 * 1024)).await })
                });
                let Poll::Ready((received, buf)) = receiving.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                self.receiving = None;
                match received {
                    // Only the kernel's messages.
                    Ok(meta) if meta.source != 0 => {}
                    Ok(meta) => {
                        let mut events = Vec::new();
                        if let Err(e) = self.links.read(&buf[..meta.len], &mut events) {
                            tracing::warn!(error = %e, "netlink message skipped");
                        }
                        self.queued.extend(events);
                        if meta.truncated {
                            self.overflowed();
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(ENOBUFS) => self.overflowed(),
                    Err(e) if e.kind() == coring::ErrorKind::Interrupted => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
        }

        fn overflowed(&mut self) {
            self.links.forget();
            self.queued.push_back(NetEvent::Overflow);
            self.dump_wanted = true;
        }
    }

    impl futures_core::Stream for NetworkChanges {
        type Item = coring::Result<NetEvent>;

        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.get_mut().poll_event(cx)
        }
    }
}

#[cfg(all(feature = "engine", not(target_os = "linux")))]
mod watch {
    use super::*;

    /// Network changes as they happen: rtnetlink is Linux's, so here
    /// [`NetworkChanges::watch`] is `Unsupported`.
    #[derive(Debug)]
    pub struct NetworkChanges {
        links: Links,
    }

    impl NetworkChanges {
        /// `Unsupported`: network-change events are read from rtnetlink, which is Linux's.
        pub fn watch() -> coring::Result<NetworkChanges> {
            Err(coring::Error::new(
                coring::ErrorKind::Unsupported,
                "network-change events: rtnetlink is Linux-only",
            ))
        }

        /// What is known of the links (nothing).
        pub fn links(&self) -> &Links {
            &self.links
        }

        /// Never called: there is no watcher to call it on.
        pub async fn next(&mut self) -> coring::Result<NetEvent> {
            Err(coring::Error::new(
                coring::ErrorKind::Unsupported,
                "network-change events: rtnetlink is Linux-only",
            ))
        }
    }
}

#[cfg(feature = "engine")]
pub use watch::NetworkChanges;

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(body);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn link(index: u32, flags: u32, name: &str) -> Vec<u8> {
        let mut body = vec![0u8; 4];
        body.extend_from_slice(&index.to_ne_bytes());
        body.extend_from_slice(&flags.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        let mut name = name.as_bytes().to_vec();
        name.push(0);
        body.extend(attr(IFLA_IFNAME, &name));
        body
    }

    fn addr(family: u8, prefix: u8, index: u32, ip: &[u8]) -> Vec<u8> {
        let mut body = vec![family, prefix, 0, 0];
        body.extend_from_slice(&index.to_ne_bytes());
        body.extend(attr(IFA_ADDRESS, ip));
        body
    }

    fn default_route(family: u8, gateway: &[u8], oif: u32) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0, 254, 3, 0, RTN_UNICAST, 0, 0, 0, 0];
        body.extend(attr(RTA_TABLE, &254u32.to_ne_bytes()));
        body.extend(attr(RTA_GATEWAY, gateway));
        body.extend(attr(RTA_OIF, &oif.to_ne_bytes()));
        body
    }

    #[test]
    fn links_report_changes_of_state_only() {
        let mut links = Links::new();
        let mut events = Vec::new();
        let mut datagram = message(RTM_NEWLINK, &link(3, 0, "v0"));
        datagram.extend(message(RTM_NEWLINK, &link(3, 0, "v0")));
        datagram.extend(message(RTM_NEWLINK, &link(3, IFF_UP, "v0")));
        datagram.extend(message(RTM_NEWLINK, &link(3, IFF_UP | IFF_RUNNING, "v0")));
        datagram.extend(message(NLMSG_DONE, &[0; 4]));
        links.read(&datagram, &mut events).unwrap();
        assert_eq!(
            events,
            [
                NetEvent::Link {
                    index: 3,
                    name: "v0".into(),
                    up: false
                },
                NetEvent::Link {
                    index: 3,
                    name: "v0".into(),
                    up: true
                },
            ]
        );
        assert_eq!(links.name(3), Some("v0"));
        events.clear();
        links
            .read(&message(RTM_DELLINK, &link(3, 0, "v0")), &mut events)
            .unwrap();
        assert_eq!(
            events,
            [NetEvent::LinkRemoved {
                index: 3,
                name: "v0".into()
            }]
        );
        assert_eq!(links.name(3), None);
    }

    #[test]
    fn addresses_and_default_routes_are_read_for_both_families() {
        let mut links = Links::new();
        let mut events = Vec::new();
        let v6: [u8; 16] = "fd77::1".parse::<Ipv6Addr>().unwrap().octets();
        let mut datagram = message(RTM_NEWADDR, &addr(AF_INET, 24, 3, &[10, 77, 0, 1]));
        datagram.extend(message(RTM_DELADDR, &addr(AF_INET6, 64, 3, &v6)));
        datagram.extend(message(
            RTM_NEWROUTE,
            &default_route(AF_INET, &[10, 77, 0, 254], 3),
        ));
        // A route to a prefix is no default route.
        let mut prefix_route = default_route(AF_INET, &[10, 77, 0, 254], 3);
        prefix_route[1] = 24;
        datagram.extend(message(RTM_NEWROUTE, &prefix_route));
        // Nor is one in the local table.
        let mut local = default_route(AF_INET6, &v6, 3);
        local[4] = 255;
        local[12 + 4..12 + 8].copy_from_slice(&255u32.to_ne_bytes());
        datagram.extend(message(RTM_DELROUTE, &local));
        links.read(&datagram, &mut events).unwrap();
        assert_eq!(
            events,
            [
                NetEvent::AddressAdded {
                    index: 3,
                    addr: [10, 77, 0, 1].into(),
                    prefix: 24
                },
                NetEvent::AddressRemoved {
                    index: 3,
                    addr: IpAddr::V6(v6.into()),
                    prefix: 64
                },
                NetEvent::DefaultRoute {
                    added: true,
                    gateway: Some([10, 77, 0, 254].into()),
                    index: Some(3)
                },
            ]
        );
    }

    #[test]
    fn malformed_messages_are_errors_never_panics() {
        let mut links = Links::new();
        let mut events = Vec::new();
        let good = message(RTM_NEWADDR, &addr(AF_INET, 24, 3, &[10, 0, 0, 1]));
        let mut long = good.clone();
        long[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(
            links.read(&long, &mut events),
            Err(NetlinkError::Malformed("message length"))
        );
        let mut bad_attr = good.clone();
        bad_attr[NLMSG_HDRLEN + 8..NLMSG_HDRLEN + 10].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(
            links.read(&bad_attr, &mut events),
            Err(NetlinkError::Malformed("attribute length"))
        );
        let mut error = message(NLMSG_ERROR, &(-1i32).to_ne_bytes());
        error.extend_from_slice(&[0; 16]);
        assert_eq!(
            links.read(&error, &mut events),
            Err(NetlinkError::Request(-1))
        );
        for cut in 0..good.len() {
            let _ = links.read(&good[..cut], &mut events);
        }
        let mut flipped = good.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = links.read(&flipped, &mut events);
            flipped[i] ^= 0xff;
        }
        assert_eq!(dump_links_request(7).len(), 32);
    }
}
