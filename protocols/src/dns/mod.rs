//! A stub resolver on the engine: names to addresses without blocking a core.
//!
//! [`Resolver::lookup_ip`] reads a name the way the C library's `getaddrinfo` does on Linux:
//! an address literal is its own answer; the hosts file comes next; then the name servers of
//! `/etc/resolv.conf`, asked for `A` and `AAAA` at once over UDP from a fresh socket and a
//! random id, with the `search` list and `ndots` applied. A server that does not answer
//! within `timeout` is passed over for the next, for `attempts` rounds; an answer too big for
//! a datagram is asked again over TCP; SERVFAIL and REFUSED move on to the next server.
//! Answers, and negative answers whose zone gives a TTL, are kept per core for their TTL.
//! Datagrams that are not the answer to the question asked (another id, another question,
//! another sender, garbage) are counted and ignored: the lookup goes on waiting.
//!
//! [`Resolver::connect`] resolves and connects, racing the addresses as RFC 8305 ("Happy
//! Eyeballs") does: families interleaved, the next attempt started 250 ms after the last
//! unless it failed sooner. The HTTP and WebSocket clients dial through it, and
//! [`connect`] does it on the core's own resolver (see [`Resolver::system`]).
//!
//! Messages are encoded and checked by `hickory-proto`; everything else is here: `wire` (the
//! question and the answer it accepts), `cache`, [`conf`] (resolv.conf and hosts).

mod cache;
pub mod conf;
mod wire;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use coring::net::{TcpStream, UdpSocket};
use coring::time;
use hickory_proto::rr::Name;

use cache::{Cache, Cached};
pub use conf::{Hosts, ResolvConf};
pub use wire::Family;
use wire::{Question, Refused, Reply};

/// Why a name could not be resolved.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// Not something a DNS name can be (empty, a label over 63 bytes, over 253 in all...).
    #[error("{0:?} is not a host name")]
    InvalidName(String),
    /// No such name (NXDOMAIN for the name and every search domain tried).
    #[error("{name}: no such host")]
    NotFound { name: String },
    /// The name exists but has no address of the families asked for.
    #[error("{name}: the name has no address")]
    NoAddresses { name: String },
    /// No server answered in time: `queries` were sent in all.
    #[error("{name}: no name server answered ({queries} queries)")]
    TimedOut { name: String, queries: usize },
    /// Every server that answered could not resolve the name (`code` is the last answer's
    /// response code: "Server Failure", "Query Refused"...).
    #[error("{name}: {server} answered {code}")]
    ServerFailure {
        name: String,
        server: SocketAddr,
        code: &'static str,
    },
    /// The last server could not be reached (no route, a TCP connection refused or cut).
    #[error("{name}: {error}")]
    Io { name: String, error: coring::Error },
    /// There was no name server to ask.
    #[error("no name server is configured")]
    NoNameservers,
    /// The system's configuration could not be read (or has no place on this platform).
    #[error("resolver configuration: {0}")]
    Config(String),
}

/// Why [`Resolver::connect`] failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The name did not resolve.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Every address was tried and refused (the last error).
    #[error("connect failed: {0}")]
    Connect(coring::Error),
    /// The deadline passed (resolving and connecting together).
    #[error("connect timed out")]
    TimedOut,
}

/// Which address families a lookup asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Families {
    /// `AAAA` and `A`, asked at once; IPv6 addresses come first.
    #[default]
    Both,
    /// `A` only.
    V4,
    /// `AAAA` only.
    V6,
}

/// How a resolver finds names.
#[derive(Clone, Debug)]
pub struct Config {
    /// The servers asked, in order (see `rotate`).
    pub nameservers: Vec<SocketAddr>,
    /// Domains tried after names with fewer than `ndots` dots (and before the name itself).
    pub search: Vec<String>,
    /// A name with at least this many dots is first tried as it is.
    pub ndots: usize,
    /// How long one query waits for one server.
    pub timeout: Duration,
    /// Rounds over the servers before a lookup gives up.
    pub attempts: usize,
    /// Start each query at the next server instead of the first.
    pub rotate: bool,
    /// Ask over TCP only.
    pub tcp_only: bool,
    /// Names answered before any server is asked.
    pub hosts: Hosts,
    /// Which address records [`Resolver::lookup_ip`] asks for.
    pub families: Families,
    /// Answers kept per resolver (0: none).
    pub cache_size: usize,
    /// The longest an answer is kept, whatever its TTL.
    pub max_ttl: Duration,
    /// UDP answer size offered through EDNS(0) (1,232 bytes, the DNS flag day's size; 0
    /// sends no EDNS and takes answers of 512 bytes).
    pub udp_payload: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_parts(ResolvConf::default(), Hosts::default())
    }
}

/// Where the system's configuration lives.
const RESOLV_CONF: &str = "/etc/resolv.conf";
const HOSTS: &str = "/etc/hosts";

impl Config {
    /// Asks `nameservers`, with resolv.conf's defaults for the rest and no hosts file.
    pub fn with_nameservers(nameservers: impl IntoIterator<Item = SocketAddr>) -> Config {
        Config {
            nameservers: nameservers.into_iter().collect(),
            ..Config::default()
        }
    }

    /// A configuration from what resolv.conf and hosts files say. With no `nameserver` line
    /// the server on this host is asked (127.0.0.1 and ::1, as the C library does).
    pub fn from_parts(conf: ResolvConf, hosts: Hosts) -> Config {
        let mut nameservers: Vec<SocketAddr> = conf
            .nameservers
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect();
        if nameservers.is_empty() {
            nameservers = vec![
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53),
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 53),
            ];
        }
        Config {
            nameservers,
            search: conf.search,
            ndots: conf.ndots,
            timeout: conf.timeout,
            attempts: conf.attempts,
            rotate: conf.rotate,
            tcp_only: conf.tcp_only,
            hosts,
            families: Families::Both,
            cache_size: 1024,
            max_ttl: Duration::from_secs(24 * 3600),
            udp_payload: 1232,
        }
    }

    /// Reads a resolv.conf and, when given, a hosts file (a missing file reads as empty, as
    /// the C library takes it; any other read error is returned).
    pub fn from_files(resolv_conf: &Path, hosts: Option<&Path>) -> Result<Config, ResolveError> {
        let read = |path: &Path| match std::fs::read_to_string(path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(ResolveError::Config(format!("{}: {e}", path.display()))),
        };
        let conf = ResolvConf::parse(&read(resolv_conf)?);
        let hosts = match hosts {
            Some(path) => Hosts::parse(&read(path)?),
            None => Hosts::default(),
        };
        Ok(Config::from_parts(conf, hosts))
    }

    /// The system's configuration: `/etc/resolv.conf` and `/etc/hosts`. On Windows, whose
    /// servers live in the registry, this is a [`ResolveError::Config`] error: give the
    /// servers in a [`Config`].
    pub fn system() -> Result<Config, ResolveError> {
        if cfg!(windows) {
            return Err(ResolveError::Config(
                "Windows keeps its name servers in the registry: give Config::nameservers".into(),
            ));
        }
        Config::from_files(Path::new(RESOLV_CONF), Some(Path::new(HOSTS)))
    }
}

/// Where a lookup's addresses came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The name was an address.
    Literal,
    /// The hosts file.
    Hosts,
    /// Answers this resolver kept.
    Cache,
    /// A name server, just now (for at least one of the families asked).
    Network,
}

/// A name's addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    /// The name the addresses belong to, after the search list and any aliases.
    pub canonical: String,
    /// The addresses: IPv6 first when both families were asked.
    pub addrs: Vec<IpAddr>,
    /// Where they came from.
    pub source: Source,
    /// When the first of them expires from the cache (`None`: literals, hosts, uncached).
    pub valid_until: Option<Instant>,
}

/// What a resolver has done, counted since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Lookups asked for (each family counts once).
    pub lookups: u64,
    /// Answered from the hosts file.
    pub hosts_hits: u64,
    /// Answered from the cache.
    pub cache_hits: u64,
    /// Queries sent over UDP.
    pub udp_queries: u64,
    /// Queries sent over TCP (truncated answers, `tcp_only`).
    pub tcp_queries: u64,
    /// Queries that got no answer in time.
    pub timeouts: u64,
    /// Answers that were truncated.
    pub truncated: u64,
    /// Answers saying the server could not resolve (SERVFAIL, REFUSED...).
    pub server_failures: u64,
    /// Datagrams ignored: from another address, another id or question, or no DNS message.
    pub ignored: u64,
    /// Entries in the cache now.
    pub cached: u64,
}

#[derive(Default)]
struct Counters {
    lookups: Cell<u64>,
    hosts_hits: Cell<u64>,
    cache_hits: Cell<u64>,
    udp_queries: Cell<u64>,
    tcp_queries: Cell<u64>,
    timeouts: Cell<u64>,
    truncated: Cell<u64>,
    server_failures: Cell<u64>,
    ignored: Cell<u64>,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// A resolver for one core: cheap to clone (clones share the cache and the counters), not
/// `Send`. Make one per core, or take the core's own with [`Resolver::system`].
#[derive(Clone)]
pub struct Resolver {
    inner: Rc<Inner>,
}

struct Inner {
    config: Config,
    cache: RefCell<Cache>,
    counters: Counters,
    next_server: Cell<usize>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("nameservers", &self.inner.config.nameservers)
            .field("stats", &self.stats())
            .finish()
    }
}

/// How a name lookup ended for one family, before the families are merged.
enum Found {
    Addrs {
        addrs: Vec<IpAddr>,
        canonical: String,
        source: Source,
        valid_until: Option<Instant>,
    },
    NoData,
    NoName,
}

/// How one query to one server went, when it gave no usable answer.
enum Miss {
    TimedOut,
    Failed(&'static str),
    Io(coring::Error),
}

/// How long [`Resolver::system`] trusts the files it read before looking at them again.
const SYSTEM_RECHECK: Duration = Duration::from_secs(5);

struct System {
    resolver: Result<Resolver, ResolveError>,
    stamps: [Option<std::time::SystemTime>; 2],
    checked: Instant,
}

thread_local! {
    static SYSTEM: RefCell<Option<System>> = const { RefCell::new(None) };
}

fn system_stamps() -> [Option<std::time::SystemTime>; 2] {
    [RESOLV_CONF, HOSTS].map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
}

impl Resolver {
    /// A resolver configured by `config`.
    pub fn new(config: Config) -> Resolver {
        let cache = Cache::new(config.cache_size, config.max_ttl);
        Resolver {
            inner: Rc::new(Inner {
                config,
                cache: RefCell::new(cache),
                counters: Counters::default(),
                next_server: Cell::new(0),
            }),
        }
    }

    /// This core's resolver on the system's configuration, made on first use and made again
    /// when `/etc/resolv.conf` or `/etc/hosts` changes (looked at no more than every 5 s), as
    /// the C library does. An error when the configuration cannot be read (always on
    /// Windows).
    pub fn system() -> Result<Resolver, ResolveError> {
        SYSTEM.with(|slot| {
            let mut slot = slot.borrow_mut();
            let now = time::now();
            let stale = match slot.as_mut() {
                None => true,
                Some(system) if now.duration_since(system.checked) < SYSTEM_RECHECK => false,
                Some(system) => {
                    system.checked = now;
                    system.stamps != system_stamps()
                }
            };
            if stale {
                *slot = Some(System {
                    resolver: Config::system().map(Resolver::new),
                    stamps: system_stamps(),
                    checked: now,
                });
            }
            match slot.as_ref() {
                Some(system) => system.resolver.clone(),
                None => Err(ResolveError::Config("no configuration".into())),
            }
        })
    }

    /// The configuration this resolver runs on.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// What it has done so far.
    pub fn stats(&self) -> ResolverStats {
        let c = &self.inner.counters;
        ResolverStats {
            lookups: c.lookups.get(),
            hosts_hits: c.hosts_hits.get(),
            cache_hits: c.cache_hits.get(),
            udp_queries: c.udp_queries.get(),
            tcp_queries: c.tcp_queries.get(),
            timeouts: c.timeouts.get(),
            truncated: c.truncated.get(),
            server_failures: c.server_failures.get(),
            ignored: c.ignored.get(),
            cached: self.inner.cache.borrow().len() as u64,
        }
    }

    /// Forgets every kept answer.
    pub fn clear_cache(&self) {
        self.inner.cache.borrow_mut().clear();
    }

    /// `host`'s addresses of the configured [`Families`].
    pub async fn lookup_ip(&self, host: &str) -> Result<Lookup, ResolveError> {
        let families: &[Family] = match self.inner.config.families {
            Families::Both => &[Family::V6, Family::V4],
            Families::V4 => &[Family::V4],
            Families::V6 => &[Family::V6],
        };
        self.lookup_families(host, families).await
    }

    /// `host`'s addresses of one family.
    pub async fn lookup(&self, host: &str, family: Family) -> Result<Lookup, ResolveError> {
        self.lookup_families(host, &[family]).await
    }

    async fn lookup_families(
        &self,
        host: &str,
        families: &[Family],
    ) -> Result<Lookup, ResolveError> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Lookup {
                canonical: host.to_owned(),
                addrs: vec![ip],
                source: Source::Literal,
                valid_until: None,
            });
        }
        for _ in families {
            bump(&self.inner.counters.lookups);
        }
        if let Some(listed) = self.inner.config.hosts.get(host) {
            let addrs: Vec<IpAddr> = families
                .iter()
                .flat_map(|f| listed.iter().filter(|ip| f.holds(ip)).copied())
                .collect();
            if !addrs.is_empty() {
                bump(&self.inner.counters.hosts_hits);
                return Ok(Lookup {
                    canonical: host.trim_end_matches('.').to_ascii_lowercase(),
                    addrs,
                    source: Source::Hosts,
                    valid_until: None,
                });
            }
        }
        let candidates = self.candidates(host)?;
        let mut exists = false;
        for name in &candidates {
            let found = match families {
                [one] => vec![self.lookup_name(name, *one).await],
                [first, second] => {
                    let (a, b) = join(
                        self.lookup_name(name, *first),
                        self.lookup_name(name, *second),
                    )
                    .await;
                    vec![a, b]
                }
                _ => Vec::new(),
            };
            match merge(found)? {
                Merged::Lookup(lookup) => return Ok(lookup),
                Merged::Exists => exists = true,
                Merged::Missing => {}
            }
        }
        let name = host.trim_end_matches('.').to_owned();
        Err(if exists {
            ResolveError::NoAddresses { name }
        } else {
            ResolveError::NotFound { name }
        })
    }

    /// The absolute names to try for `host`, in order (resolv.conf(5)'s `search` and
    /// `ndots`).
    fn candidates(&self, host: &str) -> Result<Vec<Name>, ResolveError> {
        let invalid = || ResolveError::InvalidName(host.to_owned());
        if host.is_empty() || host == "." || host.len() > 254 {
            return Err(invalid());
        }
        let absolute = |text: &str| -> Result<Name, ResolveError> {
            let mut name = Name::from_ascii(text).map_err(|_| invalid())?;
            name.set_fqdn(true);
            if name.len() > 255 {
                return Err(invalid());
            }
            Ok(name)
        };
        if host.ends_with('.') {
            return Ok(vec![absolute(host)?]);
        }
        let config = &self.inner.config;
        let as_is = absolute(host)?;
        let mut names = Vec::new();
        let dots = host.matches('.').count();
        if dots >= config.ndots {
            names.push(as_is.clone());
        }
        for domain in &config.search {
            if let Ok(name) = absolute(&format!("{host}.{domain}")) {
                names.push(name);
            }
        }
        if dots < config.ndots {
            names.push(as_is);
        }
        Ok(names)
    }

    /// One absolute name, one family: the cache, else the servers.
    async fn lookup_name(&self, name: &Name, family: Family) -> Result<Found, ResolveError> {
        let key = wire::display_name(name);
        let now = time::now();
        let cached = self.inner.cache.borrow_mut().get(&key, family, now);
        if let Some((value, until)) = cached {
            bump(&self.inner.counters.cache_hits);
            return Ok(match value {
                Cached::Addrs { addrs, canonical } => Found::Addrs {
                    addrs,
                    canonical,
                    source: Source::Cache,
                    valid_until: Some(until),
                },
                Cached::NoData => Found::NoData,
                Cached::NoName => Found::NoName,
            });
        }
        let reply = self.query(name, family).await?;
        let now = time::now();
        let mut cache = self.inner.cache.borrow_mut();
        Ok(match reply {
            Reply::Addrs {
                addrs,
                canonical,
                ttl,
            } => {
                let value = Cached::Addrs {
                    addrs: addrs.clone(),
                    canonical: canonical.clone(),
                };
                let valid_until = cache.insert(&key, family, value, ttl, now);
                Found::Addrs {
                    addrs,
                    canonical,
                    source: Source::Network,
                    valid_until,
                }
            }
            Reply::NoData { ttl } => {
                if let Some(ttl) = ttl {
                    cache.insert(&key, family, Cached::NoData, ttl, now);
                }
                Found::NoData
            }
            Reply::NoName { ttl } => {
                if let Some(ttl) = ttl {
                    cache.insert(&key, family, Cached::NoName, ttl, now);
                }
                Found::NoName
            }
            // `query` settles these itself.
            Reply::Truncated | Reply::Failed(_) => Found::NoName,
        })
    }

    /// Asks the servers, round after round, until one answers.
    async fn query(&self, name: &Name, family: Family) -> Result<Reply, ResolveError> {
        let config = &self.inner.config;
        let servers = &config.nameservers;
        if servers.is_empty() {
            return Err(ResolveError::NoNameservers);
        }
        let first = if config.rotate {
            let next = self.inner.next_server.get();
            self.inner.next_server.set(next.wrapping_add(1));
            next % servers.len()
        } else {
            0
        };
        let display = wire::display_name(name);
        let mut queries = 0;
        let mut last = None;
        for _ in 0..config.attempts.max(1) {
            for i in 0..servers.len() {
                let server = servers[(first + i) % servers.len()];
                let question = Question::new(name, family, config.udp_payload)
                    .map_err(ResolveError::InvalidName)?;
                queries += 1;
                match self.ask(server, &question).await {
                    Ok(reply) => return Ok(reply),
                    Err(Miss::TimedOut) => bump(&self.inner.counters.timeouts),
                    Err(Miss::Failed(code)) => {
                        bump(&self.inner.counters.server_failures);
                        last = Some(ResolveError::ServerFailure {
                            name: display.clone(),
                            server,
                            code,
                        });
                    }
                    Err(Miss::Io(error)) => {
                        last = Some(ResolveError::Io {
                            name: display.clone(),
                            error,
                        })
                    }
                }
            }
        }
        Err(last.unwrap_or(ResolveError::TimedOut {
            name: display,
            queries,
        }))
    }

    /// One question to one server: over UDP (then TCP if the answer was truncated), or over
    /// TCP only.
    async fn ask(&self, server: SocketAddr, question: &Question) -> Result<Reply, Miss> {
        let timeout = self.inner.config.timeout;
        let reply = if self.inner.config.tcp_only {
            self.ask_tcp(server, question, timeout).await?
        } else {
            match self.ask_udp(server, question, timeout).await? {
                Reply::Truncated => {
                    bump(&self.inner.counters.truncated);
                    self.ask_tcp(server, question, timeout).await?
                }
                reply => reply,
            }
        };
        match reply {
            Reply::Failed(code) => Err(Miss::Failed(code)),
            // A truncated answer over TCP has nowhere else to go.
            Reply::Truncated => Err(Miss::Failed("a truncated answer over TCP")),
            reply => Ok(reply),
        }
    }

    async fn ask_udp(
        &self,
        server: SocketAddr,
        question: &Question,
        timeout: Duration,
    ) -> Result<Reply, Miss> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        // A fresh socket per query: a random source port beside the random id, and no
        // answer to an earlier question can arrive on it.
        let socket = UdpSocket::bind(local).map_err(Miss::Io)?;
        socket.connect(server).map_err(Miss::Io)?;
        bump(&self.inner.counters.udp_queries);
        let (sent, _) = socket.send(question.bytes.clone()).await;
        sent.map_err(Miss::Io)?;
        let room = usize::from(self.inner.config.udp_payload.max(512));
        let deadline = time::now() + timeout;
        loop {
            let received =
                time::timeout_at(deadline, socket.recv_from(Vec::with_capacity(room))).await;
            let (meta, buf) = match received {
                Err(_) => return Err(Miss::TimedOut),
                Ok((Ok(meta), buf)) => (meta, buf),
                // ICMP port unreachable comes back as a refused receive on a connected
                // socket: nobody serves DNS there.
                Ok((Err(error), _)) => return Err(Miss::Io(error)),
            };
            if meta.source != server {
                bump(&self.inner.counters.ignored);
                continue;
            }
            if meta.truncated {
                return Ok(Reply::Truncated);
            }
            match wire::accept(question, &buf[..meta.len]) {
                Ok(reply) => return Ok(reply),
                Err(Refused::NotOurs | Refused::Undecodable) => bump(&self.inner.counters.ignored),
            }
        }
    }

    async fn ask_tcp(
        &self,
        server: SocketAddr,
        question: &Question,
        timeout: Duration,
    ) -> Result<Reply, Miss> {
        bump(&self.inner.counters.tcp_queries);
        let exchange = async {
            let stream = TcpStream::connect_timeout(server, timeout)
                .await
                .map_err(Miss::Io)?;
            let (written, _) = stream.write_all(question.tcp_bytes()).await;
            written.map_err(Miss::Io)?;
            let mut buf = Vec::with_capacity(2048);
            loop {
                if buf.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                    if buf.len() >= 2 + len {
                        return wire::accept(question, &buf[2..2 + len]).map_err(|refused| {
                            Miss::Io(coring::Error::new(
                                coring::ErrorKind::InvalidData,
                                match refused {
                                    Refused::NotOurs => {
                                        "dns over tcp: an answer to another question"
                                    }
                                    Refused::Undecodable => "dns over tcp: not a DNS message",
                                },
                            ))
                        });
                    }
                    buf.reserve(2 + len - buf.len());
                }
                let (read, back) = stream.read(buf).await;
                buf = back;
                match read {
                    Ok(0) => {
                        return Err(Miss::Io(coring::Error::new(
                            coring::ErrorKind::UnexpectedEof,
                            "dns over tcp: closed before the answer",
                        )));
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == coring::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Miss::Io(e)),
                }
            }
        };
        match time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Miss::TimedOut),
        }
    }

    /// Resolves `host` and connects to `port` on its addresses, racing them (RFC 8305: the
    /// families interleaved, each attempt 250 ms after the one before unless it failed
    /// sooner). `timeout` bounds the whole: the lookup and every attempt.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpStream, ConnectError> {
        let deadline = time::now() + timeout;
        let lookup = match time::timeout_at(deadline, self.lookup_ip(host)).await {
            Ok(lookup) => lookup?,
            Err(_) => return Err(ConnectError::TimedOut),
        };
        let addrs: Vec<SocketAddr> = interleave(&lookup.addrs)
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        race(addrs, deadline).await
    }
}

/// Connects to `host:port` within `timeout` on this core's [`Resolver::system`], falling back
/// to the C library (which blocks the core while it looks the name up) only where there is
/// no system configuration to read (Windows).
pub async fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, ConnectError> {
    connect_with(None, host, port, timeout).await
}

/// [`connect`] on `resolver`, or on the core's own when `None`.
pub async fn connect_with(
    resolver: Option<&Resolver>,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return race(vec![SocketAddr::new(ip, port)], time::now() + timeout).await;
    }
    if let Some(resolver) = resolver {
        return resolver.connect(host, port, timeout).await;
    }
    match Resolver::system() {
        Ok(resolver) => resolver.connect(host, port, timeout).await,
        Err(ResolveError::Config(_)) => TcpStream::connect_timeout((host, port), timeout)
            .await
            .map_err(|e| match e.kind() {
                coring::ErrorKind::TimedOut => ConnectError::TimedOut,
                _ => ConnectError::Connect(e),
            }),
        Err(e) => Err(e.into()),
    }
}

/// Families alternated, the first address's family first (RFC 8305 §4).
fn interleave(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut same, mut other): (Vec<IpAddr>, Vec<IpAddr>) =
        addrs.iter().partition(|ip| ip.is_ipv4() == first.is_ipv4());
    same.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    while !same.is_empty() || !other.is_empty() {
        out.extend(same.pop());
        out.extend(other.pop());
    }
    out
}

/// RFC 8305's "Connection Attempt Delay".
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

type Attempt = Pin<Box<dyn Future<Output = coring::Result<TcpStream>>>>;

/// Connection attempts to `addrs` in order, each started `ATTEMPT_DELAY` after the one
/// before or as soon as every earlier one failed; the first to connect wins and the others
/// are dropped (which cancels them).
async fn race(addrs: Vec<SocketAddr>, deadline: Instant) -> Result<TcpStream, ConnectError> {
    if let [only] = addrs[..] {
        // Nothing to race (an address literal, a name with one address): no boxed attempt,
        // no stagger timer.
        let left = deadline.saturating_duration_since(time::now());
        let stream = TcpStream::connect_timeout(only, left)
            .await
            .map_err(|e| match e.kind() {
                coring::ErrorKind::TimedOut => ConnectError::TimedOut,
                _ => ConnectError::Connect(e),
            })?;
        let _ = stream.set_nodelay(true);
        return Ok(stream);
    }
    let mut pending: Vec<Attempt> = Vec::new();
    let mut next = 0;
    let mut last_error = None;
    let mut stagger = Box::pin(time::sleep_until(time::now()));
    let attempts = std::future::poll_fn(|cx| {
        loop {
            let start_next =
                next < addrs.len() && (pending.is_empty() || stagger.as_mut().poll(cx).is_ready());
            if start_next {
                let addr = addrs[next];
                next += 1;
                let left = deadline.saturating_duration_since(time::now());
                pending.push(Box::pin(TcpStream::connect_timeout(addr, left)));
                stagger.as_mut().reset(time::now() + ATTEMPT_DELAY);
                continue;
            }
            let mut i = 0;
            let mut failed = false;
            while i < pending.len() {
                match pending[i].as_mut().poll(cx) {
                    Poll::Ready(Ok(stream)) => return Poll::Ready(Ok(stream)),
                    Poll::Ready(Err(e)) => {
                        last_error = Some(e);
                        drop(pending.swap_remove(i));
                        failed = true;
                    }
                    Poll::Pending => i += 1,
                }
            }
            if pending.is_empty() && next >= addrs.len() {
                return Poll::Ready(Err(match last_error.take() {
                    Some(e) if e.kind() == coring::ErrorKind::TimedOut => ConnectError::TimedOut,
                    Some(e) => ConnectError::Connect(e),
                    None => ConnectError::Connect(coring::Error::new(
                        coring::ErrorKind::InvalidInput,
                        "connect (no address)",
                    )),
                }));
            }
            // An attempt that failed lets the next start now, not at the stagger.
            if !(failed && pending.is_empty()) {
                return Poll::Pending;
            }
        }
    });
    match time::timeout_at(deadline, attempts).await {
        Ok(result) => {
            let stream = result?;
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Err(_) => Err(ConnectError::TimedOut),
    }
}

/// What the families found for one name, merged.
enum Merged {
    Lookup(Lookup),
    /// The name exists, without addresses of these families.
    Exists,
    /// The name does not exist.
    Missing,
}

/// Merges what the families found: addresses of any family win (an error in the other is
/// then forgiven); otherwise the first error, or whether the name exists (the next search
/// domain is tried either way).
fn merge(found: Vec<Result<Found, ResolveError>>) -> Result<Merged, ResolveError> {
    let mut lookup: Option<Lookup> = None;
    let mut error = None;
    let mut exists = false;
    for one in found {
        match one {
            Ok(Found::Addrs {
                addrs,
                canonical,
                source,
                valid_until,
            }) => match lookup.as_mut() {
                None => {
                    lookup = Some(Lookup {
                        canonical,
                        addrs,
                        source,
                        valid_until,
                    })
                }
                Some(merged) => {
                    merged.addrs.extend(addrs);
                    if source == Source::Network {
                        merged.source = Source::Network;
                    }
                    merged.valid_until = match (merged.valid_until, valid_until) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            },
            Ok(Found::NoData) => exists = true,
            Ok(Found::NoName) => {}
            Err(e) => error = error.or(Some(e)),
        }
    }
    match (lookup, error) {
        (Some(lookup), _) => Ok(Merged::Lookup(lookup)),
        (None, Some(e)) => Err(e),
        (None, None) if exists => Ok(Merged::Exists),
        (None, None) => Ok(Merged::Missing),
    }
}

/// Both futures to completion, polled together.
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut out_a = None;
    let mut out_b = None;
    std::future::poll_fn(|cx| {
        if out_a.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            out_a = Some(v);
        }
        if out_b.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            out_b = Some(v);
        }
        match (out_a.take(), out_b.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                out_a = x;
                out_b = y;
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_alternate_from_the_first() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let addrs = [
            ip("::1"),
            ip("::2"),
            ip("::3"),
            ip("10.0.0.1"),
            ip("10.0.0.2"),
        ];
        assert_eq!(
            interleave(&addrs),
            [
                ip("::1"),
                ip("10.0.0.1"),
                ip("::2"),
                ip("10.0.0.2"),
                ip("::3")
            ]
        );
        assert_eq!(interleave(&[]), Vec::<IpAddr>::new());
    }

    #[test]
    fn search_domains_and_ndots_order_the_names_tried() {
        let resolver = Resolver::new(Config {
            search: vec!["corp.example".into(), "example".into()],
            ndots: 2,
            ..Config::with_nameservers([])
        });
        let tried = |host| -> Vec<String> {
            resolver
                .candidates(host)
                .unwrap()
                .iter()
                .map(|n| n.to_ascii())
                .collect()
        };
        assert_eq!(tried("db"), ["db.corp.example.", "db.example.", "db."]);
        assert_eq!(
            tried("a.b.c"),
            ["a.b.c.", "a.b.c.corp.example.", "a.b.c.example."]
        );
        assert_eq!(tried("only.this."), ["only.this."]);
        assert!(matches!(
            resolver.candidates(""),
            Err(ResolveError::InvalidName(_))
        ));
        let long = "a".repeat(64);
        assert!(matches!(
            resolver.candidates(&long),
            Err(ResolveError::InvalidName(_))
        ));
    }
}
