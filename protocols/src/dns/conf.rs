//! `/etc/resolv.conf` and `/etc/hosts`, read the way the C library reads them (resolv.conf(5),
//! hosts(5)): unknown lines and options are skipped, the last `search` or `domain` line wins,
//! at most three name servers are used, numbers over their documented ceilings are clamped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// The C library's limits: name servers used, and the ceilings of `ndots`, `timeout` and
/// `attempts`.
const MAX_NAMESERVERS: usize = 3;
const MAX_NDOTS: usize = 15;
const MAX_TIMEOUT_SECS: u64 = 30;
const MAX_ATTEMPTS: usize = 5;
const MAX_SEARCH: usize = 6;

/// What a resolv.conf says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines (port 53), at most three.
    pub nameservers: Vec<IpAddr>,
    /// The `search` list (or the one `domain`), tried for names with fewer than `ndots` dots.
    pub search: Vec<String>,
    /// `options ndots:N` (1 by default).
    pub ndots: usize,
    /// `options timeout:N`: how long one query waits for one server (5 s by default).
    pub timeout: Duration,
    /// `options attempts:N`: rounds over the servers (2 by default).
    pub attempts: usize,
    /// `options rotate`: start each lookup at the next server.
    pub rotate: bool,
    /// `options use-vc`: ask over TCP only.
    pub tcp_only: bool,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
            rotate: false,
            tcp_only: false,
        }
    }
}

impl ResolvConf {
    /// Reads the text of a resolv.conf. Nothing in it is an error: what cannot be read is
    /// skipped, as the C library does.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // An IPv6 address may name its interface (`fe80::1%eth0`); the scope is
                    // not kept.
                    let addr = words.next().and_then(|w| w.split('%').next());
                    if let Some(ip) = addr.and_then(|a| a.parse::<IpAddr>().ok())
                        && conf.nameservers.len() < MAX_NAMESERVERS
                    {
                        conf.nameservers.push(ip);
                    }
                }
                Some("search") => {
                    conf.search = words.take(MAX_SEARCH).map(domain_of).collect();
                }
                Some("domain") => {
                    conf.search = words.next().map(domain_of).into_iter().collect();
                }
                Some("options") => {
                    for option in words {
                        conf.option(option);
                    }
                }
                _ => {}
            }
        }
        conf.search.retain(|d| !d.is_empty());
        conf
    }

    fn option(&mut self, option: &str) {
        let (name, value) = match option.split_once(':') {
            Some((name, value)) => (name, value.parse::<u64>().ok()),
            None => (option, None),
        };
        match (name, value) {
            ("ndots", Some(n)) => self.ndots = (n as usize).min(MAX_NDOTS),
            ("timeout", Some(n)) => {
                self.timeout = Duration::from_secs(n.clamp(1, MAX_TIMEOUT_SECS));
            }
            ("attempts", Some(n)) => self.attempts = (n as usize).clamp(1, MAX_ATTEMPTS),
            ("rotate", _) => self.rotate = true,
            ("use-vc" | "usevc", _) => self.tcp_only = true,
            _ => {}
        }
    }
}

fn domain_of(word: &str) -> String {
    word.trim_end_matches('.').to_ascii_lowercase()
}

/// Names and their addresses from a hosts file, in the file's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hosts {
    by_name: HashMap<String, Vec<IpAddr>>,
}

impl Hosts {
    /// Reads the text of a hosts file: an address, then its names (canonical name and
    /// aliases); `#` starts a comment; lines whose first word is no address are skipped.
    pub fn parse(text: &str) -> Hosts {
        let mut hosts = Hosts::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(ip) = words.next().and_then(|w| w.split('%').next()?.parse().ok()) else {
                continue;
            };
            for name in words {
                hosts.insert(name, ip);
            }
        }
        hosts
    }

    /// Adds `ip` for `name` (names are matched without regard to case or a final dot).
    pub fn insert(&mut self, name: &str, ip: IpAddr) {
        let addrs = self.by_name.entry(domain_of(name)).or_default();
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }

    /// The addresses listed for `name`.
    pub fn get(&self, name: &str) -> Option<&[IpAddr]> {
        self.by_name
            .get(&domain_of(name))
            .map(Vec::as_slice)
            .filter(|a| !a.is_empty())
    }

    /// How many names are listed.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no name is listed.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_reads_like_the_c_library() {
        let conf = ResolvConf::parse(
            "# written by hand\n\
             nameserver 192.0.2.53\n\
             nameserver fe80::1%eth0 ; link-local\n\
             nameserver not-an-address\n\
             nameserver 2001:db8::53\n\
             nameserver 192.0.2.54\n\
             domain first.example\n\
             search Corp.Example. lab.example\n\
             options ndots:3 timeout:0 attempts:9 rotate use-vc edns0 unknown:1\n\
             sortlist 130.155.160.0/255.255.240.0\n",
        );
        assert_eq!(
            conf.nameservers,
            ["192.0.2.53", "fe80::1", "2001:db8::53"].map(|a| a.parse::<IpAddr>().unwrap())
        );
        assert_eq!(conf.search, ["corp.example", "lab.example"]);
        assert_eq!(conf.ndots, 3);
        assert_eq!(
            conf.timeout,
            Duration::from_secs(1),
            "timeout:0 is raised to 1 s"
        );
        assert_eq!(conf.attempts, 5, "attempts are capped at 5");
        assert!(conf.rotate && conf.tcp_only);
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
        assert_eq!(
            ResolvConf::parse("search a.example\ndomain b.example\n").search,
            ["b.example"],
            "the last search or domain line wins"
        );
        assert_eq!(ResolvConf::parse("options ndots:99").ndots, 15);
    }

    #[test]
    fn hosts_keep_every_name_and_address_in_order() {
        let hosts = Hosts::parse(
            "127.0.0.1\tlocalhost\n\
             ::1 localhost ip6-localhost ip6-loopback\n\
             192.0.2.10 db.example db # the database\n\
             192.0.2.11 DB.example.\n\
             garbage line here\n\
             # 192.0.2.99 commented.example\n",
        );
        let ips = |name| hosts.get(name).map(<[IpAddr]>::to_vec);
        assert_eq!(
            ips("localhost"),
            Some(vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()])
        );
        assert_eq!(
            ips("db.example."),
            Some(vec![
                "192.0.2.10".parse().unwrap(),
                "192.0.2.11".parse().unwrap()
            ])
        );
        assert_eq!(ips("db"), Some(vec!["192.0.2.10".parse().unwrap()]));
        assert_eq!(ips("commented.example"), None);
        assert_eq!(ips("garbage"), None);
        assert_eq!(hosts.len(), 5);
    }
}
