//! Where a webhook may send: the SSRF rule of DESIGN §11.
//!
//! Owns the address rule ([`is_public`]), the check of a URL when a webhook is created
//! ([`check_url`]), and the resolver the delivery client connects through
//! ([`GuardedResolver`]). A name is resolved once per connection, its addresses
//! checked, and the client connects to exactly the addresses that passed, so a name
//! that resolves to a public address when checked and to a private one a moment later
//! (DNS rebinding) reaches nothing private. Address literals never reach a resolver;
//! [`check_url`] refuses the private ones, and delivery checks them again
//! ([`literal_refusal`]). With `serve --webhook-allow-private` every address passes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Longest URL a webhook may have.
pub(crate) const MAX_URL_CHARS: usize = 2048;

/// Why a destination is refused, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("url is not a valid URL: {0}")]
    Malformed(String),
    #[error("url must be at most {MAX_URL_CHARS} characters")]
    TooLong,
    #[error("url must be http:// or https://, not {0}://")]
    Scheme(String),
    #[error("url has no host")]
    NoHost,
    #[error("url must not carry a user name or password")]
    Credentials,
    #[error("cannot resolve {host}: {reason}")]
    Unresolved { host: String, reason: String },
    #[error(
        "{host} is {addr}, a {kind} address; webhooks may not reach private networks (serve --webhook-allow-private allows it)"
    )]
    Private { host: String, addr: IpAddr, kind: &'static str },
}

/// What kind of non-public address `ip` is, or `None` when it is public.
///
/// Refused: unspecified (0.0.0.0/8, ::), loopback, private (RFC 1918), shared/CGNAT
/// (100.64.0.0/10), link-local, IETF protocol assignments (192.0.0.0/24), benchmarking
/// (198.18.0.0/15), documentation, multicast, broadcast and reserved (240.0.0.0/4);
/// for IPv6 also unique-local (fc00::/7), site-local (fec0::/10), and any IPv4 address
/// carried inside IPv6 (v4-mapped, v4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16),
/// judged as the IPv4 address it carries.
pub(crate) fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

/// Whether `ip` is a public address a webhook may reach.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    non_public_kind(ip).is_none()
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        () if a == 0 => "unspecified",
        () if ip.is_loopback() => "loopback",
        () if ip.is_private() => "private",
        () if a == 100 && (b & 0xc0) == 64 => "shared (CGNAT)",
        () if ip.is_link_local() => "link-local",
        () if a == 192 && b == 0 && c == 0 => "IETF-reserved",
        () if a == 198 && (b & 0xfe) == 18 => "benchmarking",
        () if ip.is_documentation() => "documentation",
        () if ip.is_multicast() => "multicast",
        () if ip.is_broadcast() || a >= 240 => "reserved",
        () => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    // v4-compatible (::a.b.c.d, deprecated) and NAT64's well-known prefix carry an IPv4
    // address in their last 32 bits; 6to4 carries one in bits 16..48.
    let last32 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return v4_kind(last32);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_kind(last32);
    }
    if s[0] == 0x2002 {
        let embedded = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return v4_kind(embedded);
    }
    Some(match () {
        () if ip.is_unspecified() => "unspecified",
        () if ip.is_loopback() => "loopback",
        () if (s[0] & 0xfe00) == 0xfc00 => "unique-local",
        () if (s[0] & 0xffc0) == 0xfe80 => "link-local",
        () if (s[0] & 0xffc0) == 0xfec0 => "site-local",
        () if ip.is_multicast() => "multicast",
        () if s[0] == 0x2001 && s[1] == 0x0db8 => "documentation",
        () => return None,
    })
}

/// The URL's host as an address, when it is a literal.
fn literal(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    // IPv6 literals keep their brackets in a URL's host.
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse().ok()
}

/// The refusal of an address-literal URL whose address is not public, when private
/// destinations are not allowed. Names are the resolver's to check.
pub(crate) fn literal_refusal(url: &Url, allow_private: bool) -> Option<Refused> {
    let addr = literal(url)?;
    let kind = non_public_kind(addr).filter(|_| !allow_private)?;
    Some(Refused::Private { host: url.host_str().unwrap_or_default().to_owned(), addr, kind })
}

/// Parses a webhook's URL and checks it: http or https, a host, no credentials, and
/// (unless `allow_private`) every address the host resolves to public.
///
/// # Errors
/// [`Refused`] naming the problem.
pub(crate) async fn check_url(text: &str, allow_private: bool) -> Result<Url, Refused> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(Refused::TooLong);
    }
    let url = Url::parse(text).map_err(|e| Refused::Malformed(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::Scheme(url.scheme().to_owned()));
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or(Refused::NoHost)?.to_owned();
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Credentials);
    }
    if let Some(refused) = literal_refusal(&url, allow_private) {
        return Err(refused);
    }
    if allow_private || literal(&url).is_some() {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| Refused::Unresolved { host: host.clone(), reason: e.to_string() })?
        .collect();
    if addrs.is_empty() {
        return Err(Refused::Unresolved { host, reason: "no addresses".into() });
    }
    // Every address, not just one: the client may connect to any of them.
    if let Some((addr, kind)) = addrs.iter().find_map(|a| non_public_kind(a.ip()).map(|k| (a.ip(), k))) {
        return Err(Refused::Private { host, addr, kind });
    }
    Ok(url)
}

/// The delivery client's resolver: resolves a name and hands the client only the
/// public addresses, so what is connected to is what was checked. A name with none
/// fails the attempt with an error that says so.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuardedResolver {
    pub(crate) allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allow_private {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let (public, private): (Vec<SocketAddr>, Vec<SocketAddr>) =
                found.into_iter().partition(|a| is_public(a.ip()));
            if public.is_empty() {
                let refused = match private.first() {
                    Some(a) => {
                        Refused::Private { host, addr: a.ip(), kind: non_public_kind(a.ip()).unwrap_or("private") }
                    }
                    None => Refused::Unresolved { host, reason: "no addresses".into() },
                };
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_unique_local_addresses_are_not_public() {
        for refused in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.9.9.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:c0a8:101::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(!is_public(ip), "{refused} must be refused");
        }
        for allowed in
            ["1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"]
        {
            let ip: IpAddr = allowed.parse().unwrap();
            assert!(is_public(ip), "{allowed} is public");
        }
    }

    #[tokio::test]
    async fn urls_are_refused_by_scheme_credentials_and_address() {
        let refused = |text: &'static str| async move { check_url(text, false).await.unwrap_err() };
        assert!(matches!(refused("ftp://example.com/x").await, Refused::Scheme(s) if s == "ftp"));
        assert!(matches!(refused("not a url").await, Refused::Malformed(_)));
        assert!(matches!(refused("http://u:p@8.8.8.8/").await, Refused::Credentials));
        assert!(matches!(refused("http://127.0.0.1:9/").await, Refused::Private { kind: "loopback", .. }));
        assert!(matches!(refused("http://[::ffff:10.0.0.1]/").await, Refused::Private { kind: "private", .. }));
        assert!(matches!(refused("http://localhost:9/").await, Refused::Private { kind: "loopback", .. }));
        let long = format!("http://example.com/{}", "a".repeat(MAX_URL_CHARS));
        assert_eq!(check_url(&long, false).await.unwrap_err(), Refused::TooLong);
        assert!(check_url("http://8.8.8.8/hook", false).await.is_ok(), "a public literal needs no lookup");
        assert!(check_url("http://localhost:9/", true).await.is_ok(), "allowed when private is allowed");
    }

    #[tokio::test]
    async fn the_resolver_hands_out_no_private_address() {
        let guarded = GuardedResolver { allow_private: false };
        let err = guarded.resolve("localhost".parse().unwrap()).await.err().unwrap();
        assert!(err.to_string().contains("loopback"), "{err}");
        let open = GuardedResolver { allow_private: true };
        let addrs: Vec<SocketAddr> = open.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
