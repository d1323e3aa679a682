//! Networking on a core: TCP listeners (one per core with SO_REUSEPORT, multishot accept) and
//! streams with the owned-buffer API.

mod tcp;

pub use tcp::{DEFAULT_BACKLOG, Incoming, ListenOptions, PooledReader, TcpListener, TcpStream};
