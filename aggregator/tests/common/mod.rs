//! Helpers shared by the aggregator's integration tests: a bare HTTP/1.1
//! client, and test events.
#![allow(dead_code)]

use sluice_shared::BatchEvent;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TOKEN: &str = "edge-secret-token";

pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

/// Serves `app` on a free loopback port; its address.
pub async fn serve_http(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub async fn post(addr: SocketAddr, token: Option<&str>, body: &[u8]) -> Reply {
    request(addr, "POST", "/v1/batches", token, body).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, None, b"").await
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/vnd.sluice.batch\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers[9..12].parse().unwrap();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub fn event(n: u8) -> BatchEvent {
    BatchEvent {
        stream: "sluice.test.event".into(),
        topic: "local.sluice.test.event".into(),
        partition_key: Some(format!("key-{n}")),
        rate_key: None,
        id: [n; 16],
        received_ms: 1_795_780_800_000 + i64::from(n),
        dt_ms: 1_795_780_800_000 + i64::from(n),
        schema_uri: "/sluice/test/event/1.0.0".into(),
        dedupe: true,
        json: format!(r#"{{"n":{n}}}"#).into_bytes().into(),
    }
}

/// A QUIC client endpoint, as an edge makes one, trusting `ca` and presenting `identity`.
pub fn client_endpoint(
    ca: rustls::pki_types::CertificateDer<'static>,
    identity: Option<sluice_host::tls::Identity>,
) -> quinn::Endpoint {
    sluice_host::quic::client_endpoint(ca, identity).unwrap()
}
