//! Socket options whose meaning or existence differs between platforms, behind one name.

use std::net::Shutdown;
use std::time::Duration;

use crate::sys::fd::raw_of_socket;

/// What every socket the engine makes gets once: no SIGPIPE on writes to a closed peer
/// (SO_NOSIGPIPE where the platform has it; Linux passes MSG_NOSIGNAL per send instead).
pub(crate) fn prepare(socket: &socket2::Socket) -> std::io::Result<()> {
    coring_compat::sys::prepare_socket(raw_of_socket(socket))
}

/// The platform's `how` for shutdown(2) / Winsock's `shutdown`.
pub(crate) fn shutdown_how(how: Shutdown) -> i32 {
    match how {
        Shutdown::Read => coring_compat::sys::SHUT_RD,
        Shutdown::Write => coring_compat::sys::SHUT_WR,
        Shutdown::Both => coring_compat::sys::SHUT_RDWR,
    }
}

/// Whether several sockets may bind one address and have the kernel spread connections (or
/// datagrams) among them: SO_REUSEPORT. Windows has no such option; the engine shares one
/// socket between cores there instead.
pub(crate) const HAS_REUSE_PORT: bool = cfg!(unix);

/// Whether SO_REUSEADDR means "rebind over connections in TIME_WAIT" (Unix). On Windows a
/// listener rebinds over them without it, and SO_REUSEADDR there lets a second socket bind a
/// port another one listens on, so the engine never sets it.
pub(crate) const REUSE_ADDR_REBINDS: bool = cfg!(unix);

/// Sets SO_REUSEPORT (see [`HAS_REUSE_PORT`]; elsewhere `Unsupported`).
pub(crate) fn set_reuse_port(socket: &socket2::Socket) -> std::io::Result<()> {
    #[cfg(unix)]
    return socket.set_reuse_port(true);
    #[cfg(not(unix))]
    {
        let _ = socket;
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// The keep-alive idle time of a socket that has keep-alive on. Winsock sets it
/// (SIO_KEEPALIVE_VALS) but cannot read it back: `Unsupported` there.
pub(crate) fn keepalive_time(sock: &socket2::SockRef<'_>) -> std::io::Result<Duration> {
    #[cfg(unix)]
    return sock.tcp_keepalive_time();
    #[cfg(not(unix))]
    {
        let _ = sock;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the keep-alive time is not readable on Windows",
        ))
    }
}

/// The kernel's view of a TCP connection (TCP_INFO) on Linux; macOS below; `Unsupported`
/// elsewhere (Windows has SIO_TCP_INFO, not read yet).
#[cfg(target_os = "linux")]
pub(crate) fn tcp_info(sock: &socket2::SockRef<'_>) -> std::io::Result<crate::net::TcpInfo> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain integers; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a live, writable tcp_info and `len` says its size; the kernel writes at
    // most `len` bytes and sets `len` to what it wrote. The descriptor is the stream's own,
    // open for as long as `sock` borrows it.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(crate::net::TcpInfo {
        rtt: Duration::from_micros(u64::from(info.tcpi_rtt)),
        rtt_var: Duration::from_micros(u64::from(info.tcpi_rttvar)),
        rto: Duration::from_micros(u64::from(info.tcpi_rto)),
        retransmits: u32::from(info.tcpi_retransmits),
        total_retransmits: info.tcpi_total_retrans,
        lost: info.tcpi_lost,
        unacked: info.tcpi_unacked,
        congestion_window: info.tcpi_snd_cwnd,
        slow_start_threshold: info.tcpi_snd_ssthresh,
        send_mss: info.tcpi_snd_mss,
        path_mtu: info.tcpi_pmtu,
    })
}

/// TCP_CONNECTION_INFO, macOS's counterpart: times in milliseconds, windows in bytes (given
/// here in segments of the connection's MSS); what it does not report (current retransmits,
/// lost and unacknowledged segments, the path MTU) is 0.
#[cfg(target_os = "macos")]
pub(crate) fn tcp_info(sock: &socket2::SockRef<'_>) -> std::io::Result<crate::net::TcpInfo> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_connection_info is plain integers; all zeroes is a valid value.
    let mut info: libc::tcp_connection_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_connection_info>() as libc::socklen_t;
    // SAFETY: `info` is live and writable and `len` says its size; the kernel writes at most
    // `len` bytes. The descriptor is the stream's own, open while `sock` borrows it.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONNECTION_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mss = info.tcpi_maxseg.max(1);
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    Ok(crate::net::TcpInfo {
        rtt: ms(info.tcpi_srtt),
        rtt_var: ms(info.tcpi_rttvar),
        rto: ms(info.tcpi_rto),
        retransmits: 0,
        total_retransmits: (info.tcpi_txretransmitbytes / u64::from(mss)) as u32,
        lost: 0,
        unacked: 0,
        congestion_window: info.tcpi_snd_cwnd / mss,
        slow_start_threshold: info.tcpi_snd_ssthresh / mss,
        send_mss: info.tcpi_maxseg,
        path_mtu: 0,
    })
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub(crate) fn tcp_info(sock: &socket2::SockRef<'_>) -> std::io::Result<crate::net::TcpInfo> {
    let _ = sock;
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "TCP_INFO is read on Linux and macOS only",
    ))
}

/// IP_MTU_DISCOVER / IPV6_MTU_DISCOVER: `DO` (always set DF, refuse a datagram over the known
/// path MTU) when `on`, the kernel's default `WANT` otherwise. Linux.
#[cfg(target_os = "linux")]
pub(crate) fn set_dont_fragment(socket: &socket2::SockRef<'_>, on: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: a valid descriptor, and a pointer to a live c_int with its exact length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let v6 = socket.local_addr()?.is_ipv6();
    if v6 {
        let value = if on {
            libc::IPV6_PMTUDISC_DO
        } else {
            libc::IPV6_PMTUDISC_WANT
        };
        set(libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, value)?;
    }
    let value = if on {
        libc::IP_PMTUDISC_DO
    } else {
        libc::IP_PMTUDISC_WANT
    };
    match set(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, value) {
        // An IPv6-only socket has no IPv4 side to set.
        Err(_) if v6 => Ok(()),
        r => r,
    }
}

/// Not on this platform.
#[cfg(not(target_os = "linux"))]
pub(crate) fn set_dont_fragment(_socket: &socket2::SockRef<'_>, _on: bool) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}
