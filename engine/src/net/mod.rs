//! Networking on a core: TCP listeners (one per core with SO_REUSEPORT, multishot accept) and
//! streams, UDP sockets, Unix sockets, all with the owned-buffer API and pooled receives.

mod accept;
mod dgram;
#[cfg(target_os = "linux")]
pub mod ktls;
#[cfg(target_os = "linux")]
mod netlink;
mod pooled;
mod shared_listen;
mod stream;
mod tcp;
mod udp;
#[cfg(unix)]
mod unix;

pub use accept::{AcceptFailures, Incoming};
pub use dgram::{Datagram, RecvMeta};
#[cfg(target_os = "linux")]
pub use netlink::{NETLINK_ROUTE, NetlinkSocket};
pub use pooled::PooledReader;
pub use tcp::{DEFAULT_BACKLOG, ListenOptions, TcpInfo, TcpListener, TcpStream};
pub use udp::{UdpPooled, UdpSocket};
#[cfg(unix)]
pub use unix::{UnixAddr, UnixDatagram, UnixListener, UnixPooled, UnixStream};
