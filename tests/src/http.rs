//! Speaking HTTP to the processes under test: requests as a client sends
//! them (ureq), raw bytes for the hostile requests no client sends, the
//! services' metrics read as Prometheus text, and batches posted to an
//! aggregator.

use std::net::SocketAddr;
use std::time::Duration;

/// An HTTP answer: status, headers (names lower-case) and body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// Header (lower-case name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Largest answer read.
const MAX_ANSWER: u64 = 256 * 1024 * 1024;

/// One blocking request, as a client sends it: statuses of every kind are
/// answers, not errors; network failures are errors.
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpReply> {
    let io = |e: ureq::Error| std::io::Error::other(e.to_string());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        // Requests are sent as the tests spell them, GET with a body included.
        .allow_non_standard_methods(true)
        .build()
        .new_agent();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let answer = if body.is_empty() {
        agent.run(request.body(()).map_err(std::io::Error::other)?)
    } else {
        agent.run(request.body(body.to_vec()).map_err(std::io::Error::other)?)
    };
    let mut answer = answer.map_err(io)?;
    let headers = answer
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let status = answer.status().as_u16();
    let body = answer
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .map_err(io)?;
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

/// A request written to the socket byte for byte, for what no client sends
/// (headers over any limit) or how some clients send it (the whole body
/// written before the answer is read, even when the server answered early):
/// write errors are ignored and whatever answer came is read.
pub fn raw_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpReply> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    exchange(addr, head.as_bytes(), body, false)
}

/// As a client that writes its whole request before it reads (Python's
/// urllib, OkHttp, NSURLSession): `head` (request line and headers, with
/// their closing blank line) and `body` are written whole, and a write that
/// fails (a server that closed on an early answer) is the error returned;
/// then the answer is read.
pub fn write_whole_then_read(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
) -> std::io::Result<HttpReply> {
    exchange(addr, head.as_bytes(), body, true)
}

fn exchange(
    addr: SocketAddr,
    head: &[u8],
    body: &[u8],
    strict: bool,
) -> std::io::Result<HttpReply> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(head)?;
    // A server may answer (413, say) before reading the whole body and close.
    let written = stream.write_all(body);
    if strict {
        written?;
    }
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return Err(e);
    }
    let incomplete = || {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "incomplete HTTP response",
        )
    };
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(incomplete)?;
    let status = std::str::from_utf8(raw.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status"))?;
    let headers = String::from_utf8_lossy(&raw[..split])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    Ok(HttpReply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// A blocking request: status and body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    http_call(addr, method, path, headers, body).map(|r| (r.status, r.body))
}

/// A blocking POST: status and body.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, "POST", path, headers, body)
}

/// A blocking GET: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    http_request(addr, "GET", path, &[], b"")
}

/// The value of a Prometheus sample, e.g. `sluice_edge_spool_bytes` or
/// `sluice_edge_events_total{outcome="delivered"}`, from `/metrics` at `addr`;
/// 0 when absent. The sample's labels must be exactly those given.
pub fn metric(addr: SocketAddr, sample: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").expect("metrics are served");
    let text = String::from_utf8_lossy(&body);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the metrics are Prometheus text");
    let (name, labels) = match sample.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}')),
        None => (sample, ""),
    };
    let want: std::collections::BTreeMap<&str, &str> = labels
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
        .collect();
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.len() == want.len()
                && want.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .unwrap_or(0.0)
}

/// Posts `batch` to an aggregator's `/v1/batches` with the bearer `token`;
/// its acknowledgement when it answered 200 with one, else `None`.
pub fn post_batch(
    addr: SocketAddr,
    token: &str,
    batch: &sluice_shared::Batch,
) -> Option<sluice_shared::BatchAck> {
    let auth = format!("Bearer {token}");
    let (status, body) = http_post(
        addr,
        "/v1/batches",
        &[("Authorization", &auth)],
        &batch.encode(true),
    )
    .ok()?;
    (status == 200).then_some(())?;
    sluice_shared::BatchAck::decode_for(&body, batch, &sluice_shared::WireLimits::default()).ok()
}

/// Posts `events` as one JSON array to an edge's `/v1/events` and asserts it answers 201.
pub fn post_events_created(edge: SocketAddr, events: &[serde_json::Value]) {
    let reply = http_call(
        edge,
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json")],
        serde_json::Value::from(events.to_vec())
            .to_string()
            .as_bytes(),
    )
    .expect("the edge answers");
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
}
