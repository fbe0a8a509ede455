//! Where a request came from and how: the scheme it reached us by (https
//! over TLS; behind `--no-tls`, https only when a `--trusted-proxy` says so
//! in `X-Forwarded-Proto`), the client's address (the peer's, or the one a
//! trusted proxy appended to `X-Forwarded-For`), and the base URL resources
//! are located under. A request's `Host` header is never used: it is the
//! client's to forge.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::http::header::{HeaderValue, STRICT_TRANSPORT_SECURITY};
use axum::middleware::Next;
use axum::response::Response;

use super::Shared;

/// The scheme a request reached the gateway by; every request carries one
/// as an extension (set by [`mark_scheme`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// How the gateway is reached: its listener, TLS or not, the proxies whose
/// `X-Forwarded-Proto` counts, and `--public-url`.
pub struct Origin {
    public_url: Option<String>,
    listen: SocketAddr,
    tls: bool,
    trusted_proxies: Vec<Cidr>,
}

impl Origin {
    pub fn new(
        public_url: Option<&str>,
        listen: SocketAddr,
        tls: bool,
        trusted_proxies: Vec<Cidr>,
    ) -> Self {
        Origin {
            public_url: public_url.map(|url| url.trim_end_matches('/').to_string()),
            listen,
            tls,
            trusted_proxies,
        }
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|peer| {
            let peer = peer.to_canonical();
            self.trusted_proxies.iter().any(|net| net.contains(peer))
        })
    }

    /// The address the person connected from: behind a trusted proxy, the
    /// last `X-Forwarded-For` entry (the one that proxy appended; those
    /// before it are the client's to forge), else the peer. Logins are
    /// throttled by it, so everyone behind one proxy is not one source.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        if !self.trusts(peer) {
            return peer.map(|p| p.to_canonical());
        }
        headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(|last| last.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .or(peer.map(|p| p.to_canonical()))
    }

    /// Over TLS, https. Otherwise https only when the peer is a trusted proxy
    /// and the last `X-Forwarded-Proto` value (the one that proxy set) says
    /// `https`; http in every other case.
    pub fn scheme(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Scheme {
        if self.tls {
            return Scheme::Https;
        }
        if !self.trusts(peer) {
            return Scheme::Http;
        }
        let forwarded = headers
            .get_all("x-forwarded-proto")
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .map(str::trim);
        match forwarded {
            Some(proto) if proto.eq_ignore_ascii_case("https") => Scheme::Https,
            _ => Scheme::Http,
        }
    }

    /// The base of `/scim/v2`: `--public-url` if given (a trailing `/`
    /// dropped), else `<scheme>://<listen address>/scim/v2`.
    pub fn base(&self, scheme: Scheme) -> String {
        match &self.public_url {
            Some(url) => url.clone(),
            None => format!("{}://{}/scim/v2", scheme.as_str(), self.listen),
        }
    }
}

/// The client's address, as [`Origin::client`] found it; every request
/// carries one as an extension when the peer is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// Middleware: puts the request's [`Scheme`] and [`ClientAddress`] into its
/// extensions, and over TLS tells browsers to keep to https
/// (`Strict-Transport-Security`).
pub async fn mark_scheme(State(app): State<Shared>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let scheme = app.origin.scheme(peer, request.headers());
    let client = app.origin.client(peer, request.headers());
    request.extensions_mut().insert(scheme);
    if let Some(client) = client {
        request.extensions_mut().insert(ClientAddress(client));
    }
    let mut response = next.run(request).await;
    if app.origin.tls {
        response.headers_mut().insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// An address or a network (`10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                masked(u128::from(u32::from(net)), 32, self.prefix)
                    == masked(u128::from(u32::from(a)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                masked(u128::from(net), 128, self.prefix) == masked(u128::from(a), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
    let drop = width - u32::from(prefix);
    bits.checked_shr(drop)
        .unwrap_or(0)
        .checked_shl(drop)
        .unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?}: expected an IP address or a network (10.0.0.0/8)"))?;
        let network = network.to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {width}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-proto", value.parse().unwrap());
        }
        map
    }

    fn origin(tls: bool, trusted: &[&str]) -> Origin {
        Origin::new(
            None,
            "127.0.0.1:8443".parse().unwrap(),
            tls,
            trusted.iter().map(|t| t.parse().unwrap()).collect(),
        )
    }

    #[test]
    fn networks() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("proxy.example".parse::<Cidr>().is_err());
    }

    #[test]
    fn forwarded_proto_counts_only_from_a_trusted_peer_without_tls() {
        let plain = origin(false, &["127.0.0.1"]);
        let proxy = Some("127.0.0.1".parse().unwrap());
        let mapped = Some("::ffff:127.0.0.1".parse().unwrap());
        let stranger = Some("192.0.2.9".parse().unwrap());
        assert_eq!(plain.scheme(proxy, &headers(&["https"])), Scheme::Https);
        assert_eq!(plain.scheme(mapped, &headers(&["HTTPS"])), Scheme::Https);
        assert_eq!(plain.scheme(stranger, &headers(&["https"])), Scheme::Http);
        assert_eq!(plain.scheme(None, &headers(&["https"])), Scheme::Http);
        assert_eq!(plain.scheme(proxy, &headers(&[])), Scheme::Http);
        assert_eq!(plain.scheme(proxy, &headers(&["gopher"])), Scheme::Http);
        // The proxy's own value is the last one.
        assert_eq!(
            plain.scheme(proxy, &headers(&["https, http"])),
            Scheme::Http
        );
        assert_eq!(
            plain.scheme(proxy, &headers(&["http", "https"])),
            Scheme::Https
        );
        let tls = origin(true, &[]);
        assert_eq!(tls.scheme(stranger, &headers(&["http"])), Scheme::Https);
        assert_eq!(tls.base(Scheme::Https), "https://127.0.0.1:8443/scim/v2");
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_forwarded_for_it() {
        let proxy = Some("10.0.0.5".parse().unwrap());
        let mut forwarded = headers(&[]);
        forwarded.append("x-forwarded-for", "6.6.6.6, 192.0.2.7".parse().unwrap());
        let behind = origin(false, &["10.0.0.5"]);
        assert_eq!(behind.client(proxy, &forwarded), "192.0.2.7".parse().ok());
        // Anyone else's header is theirs to forge.
        let stranger = Some("198.51.100.1".parse().unwrap());
        assert_eq!(behind.client(stranger, &forwarded), stranger);
        // A trusted proxy that sent none, or garbage: the proxy itself.
        assert_eq!(behind.client(proxy, &headers(&[])), proxy);
        let mut garbage = headers(&[]);
        garbage.append("x-forwarded-for", "not-an-address".parse().unwrap());
        assert_eq!(behind.client(proxy, &garbage), proxy);
    }

    #[test]
    fn public_url_wins() {
        let origin = Origin::new(
            Some("https://idm.example.org/scim/v2/"),
            "127.0.0.1:8443".parse().unwrap(),
            false,
            Vec::new(),
        );
        assert_eq!(origin.base(Scheme::Http), "https://idm.example.org/scim/v2");
    }
}
