//! What an intake request says besides its events: the content type, the
//! query parameters, the client's address (believed only from trusted
//! proxies) and the request id.

use ipnet::IpNet;
use std::net::IpAddr;

/// The body types `POST /v1/events` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` (or no content type at all).
    Json,
    /// `text/plain`, as `navigator.sendBeacon` sends a string.
    Beacon,
    /// `application/reports+json`, from the browser Reporting API.
    Reports,
}

/// A request refused before any event in it was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A content type the intake does not read.
    #[error(
        "content type `{0}` is not accepted: send application/json, text/plain (sendBeacon) or application/reports+json"
    )]
    UnsupportedType(String),
    /// The GET beacon's query is not an event.
    #[error("the beacon's query string is not a percent-encoded JSON event: {0}")]
    Beacon(String),
    /// The request's headers are too large.
    #[error("the request headers are {size} bytes, over the limit of {limit} bytes")]
    HeadersTooLarge {
        /// Their size: names and values.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// The most header bytes (names and values together) a request may carry.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses a request whose headers (name, value pairs) add up to more than [`MAX_HEADER_BYTES`].
pub fn check_header_size<'a>(
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<(), Refusal> {
    let size = headers
        .into_iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        return Err(Refusal::HeadersTooLarge {
            size,
            limit: MAX_HEADER_BYTES,
        });
    }
    Ok(())
}

/// Reads the `content-type` header.
pub fn body_kind(content_type: Option<&str>) -> Result<BodyKind, Refusal> {
    let Some(value) = content_type else {
        return Ok(BodyKind::Json);
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" | "application/json" => Ok(BodyKind::Json),
        "text/plain" => Ok(BodyKind::Beacon),
        "application/reports+json" => Ok(BodyKind::Reports),
        _ => Err(Refusal::UnsupportedType(value.to_owned())),
    }
}

/// The query parameters of `POST /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `?hasty=true`: answer before the events are durable.
    pub hasty: bool,
    /// `stream`: the stream for events without `meta.stream`.
    pub stream: Option<String>,
    /// `schema_uri`: the schema for events without `$schema`.
    pub schema_uri: Option<String>,
}

impl Query {
    /// Parses a query string (without the `?`).
    pub fn parse(query: Option<&str>) -> Query {
        let mut out = Query::default();
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            match key {
                "hasty" => out.hasty = matches!(value.as_str(), "" | "true" | "1"),
                "stream" if !value.is_empty() => out.stream = Some(value),
                "schema_uri" if !value.is_empty() => out.schema_uri = Some(value),
                _ => {}
            }
        }
        out
    }
}

/// The event of a legacy EventLogging GET beacon: the whole query string is
/// the percent-encoded JSON (a trailing `;` cache-buster is dropped).
pub fn beacon_event(query: Option<&str>) -> Result<Vec<u8>, Refusal> {
    let query = query
        .filter(|q| !q.is_empty())
        .ok_or_else(|| Refusal::Beacon("the query string is empty".into()))?;
    let query = query.strip_suffix(';').unwrap_or(query);
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(query).collect();
    if bytes.first().is_none_or(|b| *b != b'{') {
        return Err(Refusal::Beacon("it does not start with `{`".into()));
    }
    Ok(bytes)
}

/// Which proxies may say who the client is.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Proxies in these networks are believed.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer itself, unless the peer is a trusted
    /// proxy; then `CF-Connecting-IP`, or the right-most address of
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, header: impl Fn(&str) -> Option<String>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        if let Some(ip) = header("cf-connecting-ip").and_then(|v| v.trim().parse().ok()) {
            return ip;
        }
        let mut client = peer;
        if let Some(chain) = header("x-forwarded-for") {
            for hop in chain.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(ip) => {
                        client = ip;
                        if !self.trusts(ip) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        client
    }
}

/// The request id: the sender's `x-request-id` when it is a sane token, else a new UUIDv4 from `random`.
pub fn request_id(given: Option<&str>, random: u128) -> String {
    match given {
        Some(id)
            if !id.is_empty() && id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            id.to_owned()
        }
        _ => uuid::Builder::from_random_bytes(random.to_le_bytes())
            .into_uuid()
            .hyphenated()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(body_kind(None), Ok(BodyKind::Json));
        assert_eq!(
            body_kind(Some("application/json; charset=utf-8")),
            Ok(BodyKind::Json)
        );
        assert_eq!(
            body_kind(Some("text/plain;charset=UTF-8")),
            Ok(BodyKind::Beacon)
        );
        assert_eq!(
            body_kind(Some("application/reports+json")),
            Ok(BodyKind::Reports)
        );
        let err = body_kind(Some("application/x-www-form-urlencoded")).unwrap_err();
        assert!(err.to_string().contains("x-www-form-urlencoded"));
    }

    #[test]
    fn query_parameters() {
        let q = Query::parse(Some("hasty=true&stream=a.b&schema_uri=%2Fx%2F1.0.0"));
        assert!(q.hasty);
        assert_eq!(q.stream.as_deref(), Some("a.b"));
        assert_eq!(q.schema_uri.as_deref(), Some("/x/1.0.0"));
        assert!(!Query::parse(Some("hasty=false")).hasty);
        assert!(!Query::parse(None).hasty);
    }

    #[test]
    fn beacons() {
        assert_eq!(
            beacon_event(Some("%7B%22a%22%3A1%7D;")).unwrap(),
            br#"{"a":1}"#.to_vec()
        );
        assert!(beacon_event(Some("")).is_err());
        assert!(beacon_event(Some("a=1")).is_err());
    }

    #[test]
    fn client_addresses_come_from_trusted_proxies_only() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let headers = |name: &str| match name {
            "x-forwarded-for" => Some("203.0.113.9, 198.51.100.7, 10.1.1.1".to_owned()),
            _ => None,
        };
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(trusted.client_ip(stranger, headers), stranger);
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        // The right-most hop that is not a trusted proxy: earlier hops could be forged.
        assert_eq!(
            trusted.client_ip(proxy, headers),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let cf = |name: &str| (name == "cf-connecting-ip").then(|| "2001:db8::1".to_owned());
        assert_eq!(
            trusted.client_ip(proxy, cf),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        assert_eq!(request_id(Some("abc-123"), 0), "abc-123");
        let made = request_id(Some("bad id\n"), 42);
        assert_eq!(made.len(), 36);
        assert_ne!(made, request_id(None, 43));
    }
}
