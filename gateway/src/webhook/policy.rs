//! Which webhook URLs may be called (no SSRF): `TANDEM_WEBHOOK_ALLOW` and the address rules.
//!
//! A URL is allowed when it is `http` or `https`, its host matches the allow list (a host
//! name, a `*.suffix` pattern, `*` for any host, or, for an IP address, a CIDR), and every
//! address its host resolves to is public, or inside a CIDR of the allow list: loopback,
//! private, link-local, shared (CGNAT), unique-local, multicast, unspecified and the cloud
//! metadata addresses are refused otherwise. The check runs at submission and again before
//! each delivery attempt, which then connects to the very address it checked (no DNS rebind
//! between the check and the connection).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use url::{Host, Url};

/// The cloud metadata addresses (AWS, GCP, Azure, ...; AWS's IPv6 one).
const METADATA: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// `TANDEM_WEBHOOK_ALLOW`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    /// `*`: any host name or address (addresses still checked).
    any: bool,
    /// Exact host names, lowercase.
    hosts: Vec<String>,
    /// `*.example.com` as `.example.com`.
    suffixes: Vec<String>,
    /// CIDRs (a bare address is a /32 or /128).
    nets: Vec<IpNet>,
}

/// A URL checked and resolved: where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub url: Url,
    /// The host as written in the URL (for `reqwest`'s `resolve`), when it is a name.
    pub host_name: Option<String>,
    /// The checked address to connect to.
    pub addr: SocketAddr,
}

/// Why a URL is refused (the 400's message, or a delivery's `last_error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a valid URL: {0}")]
    Invalid(String),
    #[error("only http and https webhook URLs are allowed, not {0}:")]
    Scheme(String),
    #[error("the webhook URL has no host")]
    NoHost,
    #[error("host {0} is not in TANDEM_WEBHOOK_ALLOW")]
    NotAllowed(String),
    #[error(
        "host {host} resolves to {addr}, a {kind} address, which is refused unless a CIDR in TANDEM_WEBHOOK_ALLOW names it"
    )]
    Address {
        host: String,
        addr: IpAddr,
        kind: &'static str,
    },
    #[error("host {0} does not resolve: {1}")]
    Unresolved(String, String),
}

impl Refusal {
    /// A failure that may pass (DNS), as opposed to a URL that will never be allowed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unresolved(..))
    }
}

impl AllowList {
    /// Parses the comma- or space-separated entries; `Err` names a bad one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut list = Self::default();
        for entry in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let entry = entry.to_ascii_lowercase();
            if entry == "*" {
                list.any = true;
            } else if let Some(suffix) = entry.strip_prefix("*.") {
                if suffix.is_empty() || suffix.contains('*') {
                    return Err(format!("{entry:?} is not a valid *.suffix pattern"));
                }
                list.suffixes.push(format!(".{suffix}"));
            } else if let Ok(net) = entry.parse::<IpNet>() {
                list.nets.push(net.trunc());
            } else if let Ok(addr) = entry.parse::<IpAddr>() {
                list.nets.push(IpNet::from(addr));
            } else if entry.contains(['*', '/', ':', '@']) {
                return Err(format!(
                    "{entry:?} is not a host name, a *.suffix pattern or a CIDR"
                ));
            } else {
                list.hosts.push(entry.trim_end_matches('.').to_owned());
            }
        }
        Ok(list)
    }

    /// No entries: webhooks are off.
    pub fn is_empty(&self) -> bool {
        !self.any && self.hosts.is_empty() && self.suffixes.is_empty() && self.nets.is_empty()
    }

    fn names_net(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.nets.iter().any(|net| net.contains(&addr))
    }

    fn allows_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.any
            || self.hosts.iter().any(|h| h == name)
            || self.suffixes.iter().any(|s| name.ends_with(s.as_str()))
    }

    /// Checks the URL's form and host against the list, without resolving it.
    pub fn check_syntax(&self, raw: &str) -> Result<Url, Refusal> {
        let url = Url::parse(raw).map_err(|e| Refusal::Invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(url.scheme().to_owned()));
        }
        match url.host() {
            None => return Err(Refusal::NoHost),
            Some(Host::Domain(name)) if !self.allows_name(name) => {
                return Err(Refusal::NotAllowed(name.to_owned()));
            }
            Some(Host::Ipv4(ip)) if !(self.any || self.names_net(IpAddr::V4(ip))) => {
                return Err(Refusal::NotAllowed(ip.to_string()));
            }
            Some(Host::Ipv6(ip)) if !(self.any || self.names_net(IpAddr::V6(ip))) => {
                return Err(Refusal::NotAllowed(format!("[{ip}]")));
            }
            Some(_) => {}
        }
        Ok(url)
    }

    /// The whole check: the URL's form and host, then every address it resolves to; the
    /// result names the address to connect to.
    pub async fn check(&self, raw: &str) -> Result<Checked, Refusal> {
        let url = self.check_syntax(raw)?;
        let port = url.port_or_known_default().unwrap_or(80);
        let (host_name, addrs) = match url.host() {
            Some(Host::Domain(name)) => {
                let name = name.to_owned();
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                    .await
                    .map_err(|e| Refusal::Unresolved(name.clone(), e.to_string()))?
                    .collect();
                if addrs.is_empty() {
                    return Err(Refusal::Unresolved(name, "no addresses".into()));
                }
                (Some(name), addrs)
            }
            Some(Host::Ipv4(ip)) => (None, vec![SocketAddr::new(IpAddr::V4(ip), port)]),
            Some(Host::Ipv6(ip)) => (None, vec![SocketAddr::new(IpAddr::V6(ip), port)]),
            None => return Err(Refusal::NoHost),
        };
        // Every address must pass: a name resolving to a public and a private address is
        // refused, whichever of them a connection would have used.
        for addr in &addrs {
            if let Some(kind) = special(addr.ip())
                && !self.names_net(addr.ip())
            {
                return Err(Refusal::Address {
                    host: url.host_str().unwrap_or_default().to_owned(),
                    addr: addr.ip(),
                    kind,
                });
            }
        }
        Ok(Checked {
            url,
            host_name,
            addr: addrs[0],
        })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 one it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of non-public address `addr` is, if it is one.
fn special(addr: IpAddr) -> Option<&'static str> {
    let addr = canonical(addr);
    if METADATA.contains(&addr) {
        return Some("cloud metadata");
    }
    match addr {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            if ip.is_loopback() {
                Some("loopback")
            } else if ip.is_private() {
                Some("private")
            } else if ip.is_link_local() {
                Some("link-local")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (CGNAT)")
            } else if ip.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
                Some("multicast or reserved")
            } else {
                None
            }
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            if ip.is_loopback() {
                Some("loopback")
            } else if ip.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local (private)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if ip.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> AllowList {
        AllowList::parse(text).unwrap()
    }

    #[test]
    fn entries_parse_into_hosts_patterns_and_cidrs() {
        let allow = list("hooks.example.com, *.example.org 10.0.0.0/8 127.0.0.1");
        assert!(!allow.is_empty());
        assert!(list("").is_empty());
        assert!(allow.check_syntax("https://hooks.example.com/x").is_ok());
        assert!(allow.check_syntax("https://a.b.example.org/x").is_ok());
        assert!(allow.check_syntax("https://example.org/x").is_err());
        assert!(allow.check_syntax("https://evil.com/x").is_err());
        assert!(allow.check_syntax("http://10.1.2.3:9000/x").is_ok());
        assert!(allow.check_syntax("http://127.0.0.1/x").is_ok());
        assert!(allow.check_syntax("http://127.0.0.2/x").is_err());
        assert!(AllowList::parse("*.").is_err());
        assert!(AllowList::parse("a*b.com").is_err());
    }

    #[test]
    fn only_http_and_https() {
        let allow = list("*");
        for bad in [
            "file:///etc/passwd",
            "ftp://example.com/",
            "gopher://x/",
            "not a url",
        ] {
            assert!(allow.check_syntax(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn private_addresses_need_a_cidr() {
        let any = list("*");
        for refused in [
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.1/",
            "http://192.168.1.1/",
            "http://172.16.0.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fe80::1]/",
            "http://localhost/",
        ] {
            assert!(
                matches!(any.check(refused).await, Err(Refusal::Address { .. })),
                "{refused}: {:?}",
                any.check(refused).await
            );
        }
        let loopback = list("127.0.0.1/32");
        let checked = loopback.check("http://127.0.0.1:9/hook").await.unwrap();
        assert_eq!(checked.addr, "127.0.0.1:9".parse().unwrap());
        // A CIDR names addresses, not host names.
        assert!(loopback.check("http://localhost:9/").await.is_err());
        let named = list("localhost 127.0.0.0/8 ::1");
        assert!(named.check("http://localhost:9/").await.is_ok());
        // A CIDR for loopback does not open the metadata address.
        assert!(
            list("127.0.0.0/8, *")
                .check("http://169.254.169.254/")
                .await
                .is_err()
        );
        assert!(any.check("http://93.184.215.14/").await.is_ok());
    }
}
