//! Helpers shared by the aggregator's integration tests: an HTTP client,
//! and test events.
#![allow(dead_code)]

use sluice_shared::BatchEvent;
use std::net::SocketAddr;
use tokio::net::TcpListener;

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
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/vnd.sluice.batch".to_owned())];
    headers.extend(auth.map(|a| ("Authorization", a)));
    request_with(addr, method, path, &headers, body).await
}

/// A request with these headers, sent by a blocking client off the runtime's threads.
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> Reply {
    let (method, uri) = (method.to_owned(), format!("http://{addr}{path}"));
    let (headers, body) = (headers.to_vec(), body.to_vec());
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut request = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(uri);
        for (k, v) in &headers {
            request = request.header(*k, v);
        }
        let mut answer = if body.is_empty() {
            agent.run(request.body(()).unwrap())
        } else {
            agent.run(request.body(body).unwrap())
        }
        .expect("the service answers");
        let headers = answer
            .headers()
            .iter()
            .map(|(n, v)| format!("{}: {}\n", n, String::from_utf8_lossy(v.as_bytes())))
            .collect();
        Reply {
            status: answer.status().as_u16(),
            headers,
            body: answer.body_mut().read_to_vec().expect("the body reads"),
        }
    })
    .await
    .expect("the request task ends")
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
