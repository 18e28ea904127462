//! Batch ingest over real QUIC with TLS 1.3 on loopback: client certificates, tokens and refusals.

mod common;

use sluice_aggregator::quic::{self, QuicLimits};
use sluice_aggregator::{CommitLoop, CommitOptions, Live, LogSink, Metrics};
use sluice_host::quic::send_batch;
use sluice_host::tls::{DevCa, ensure_dev_pki};
use sluice_host::token::Token;
use sluice_log::{Log, LogOptions};
use sluice_shared::LinkReply as QuicReply;
use sluice_shared::link::status;
use sluice_shared::{Batch, BatchEvent, EventAck, StreamConfig, WireLimits};
use std::net::SocketAddr;
use std::path::Path;

const TOKEN: &str = "quic-edge-token";

fn batch(id: u8, n: u8) -> Batch {
    Batch {
        id: [id; 16],
        events: (0..n)
            .map(|i| BatchEvent {
                stream: "s".into(),
                topic: "local.s".into(),
                partition_key: None,
                rate_key: None,
                id: [id, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                received_ms: 1_795_780_800_000,
                dt_ms: 1_795_780_800_000,
                schema_uri: "/a/b/1.0.0".into(),
                dedupe: true,
                json: b"{}".to_vec().into(),
            })
            .collect(),
        errors: Vec::new(),
    }
}

async fn server(dir: &Path, ca: &DevCa) -> SocketAddr {
    server_with(dir, ca, QuicLimits::default()).await.addr
}

/// A QUIC server over an embedded log in `dir`, and how to stop it.
struct Served {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    serving: tokio::task::JoinHandle<()>,
}

async fn server_with(dir: &Path, ca: &DevCa, quic_limits: QuicLimits) -> Served {
    let log = Log::open(dir, LogOptions::default()).unwrap();
    let streams = Live::new(StreamConfig::parse("streams: {s: {schema_title: a/b}}").unwrap());
    let sink = CommitLoop::start(
        Box::new(LogSink::new(log, None)),
        streams,
        CommitOptions::default(),
        Metrics::new(),
    );
    let (server_id, _, _) = ca.issue(&["localhost", "127.0.0.1"], false).unwrap();
    let endpoint = quic::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        server_id,
        ca.certificate(),
        quic_limits,
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(quic::serve_until(
        endpoint,
        sink,
        Some(Token::new(TOKEN)),
        WireLimits::default(),
        quic_limits,
        stopping,
    ));
    Served {
        addr,
        stop,
        serving,
    }
}

#[tokio::test]
async fn certified_and_token_edges_are_served_and_others_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("test CA").unwrap();
    let addr = server(dir.path(), &ca).await;
    let limits = WireLimits::default();

    // An edge with a certificate from the configured CA.
    let (edge_id, _, _) = ca.issue(&["edge-1"], true).unwrap();
    let client = common::client_endpoint(ca.certificate(), Some(edge_id));
    let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
    let b = batch(1, 10);
    match send_batch(&conn, &b, None, &limits).await.unwrap() {
        QuicReply::Ack(ack) => assert_eq!(ack.verdicts, vec![EventAck::Accepted; 10]),
        other => panic!("{other:?}"),
    }
    // Several batches on one connection, concurrently; a resend is all duplicates.
    let b2 = batch(2, 5);
    let (r1, r2) = tokio::join!(
        send_batch(&conn, &b2, None, &limits),
        send_batch(&conn, &b, None, &limits)
    );
    assert!(matches!(r1.unwrap(), QuicReply::Ack(a) if a.verdicts == vec![EventAck::Accepted; 5]));
    assert!(
        matches!(r2.unwrap(), QuicReply::Ack(a) if a.verdicts == vec![EventAck::Duplicate; 10])
    );

    // No certificate: the token is the only way in.
    let anonymous = common::client_endpoint(ca.certificate(), None);
    let conn = anonymous.connect(addr, "localhost").unwrap().await.unwrap();
    assert_eq!(
        send_batch(&conn, &batch(3, 1), None, &limits)
            .await
            .unwrap(),
        QuicReply::Unauthorized
    );
    assert_eq!(
        send_batch(&conn, &batch(3, 1), Some("wrong-edge-token"), &limits)
            .await
            .unwrap(),
        QuicReply::Unauthorized
    );
    assert!(matches!(
        send_batch(&conn, &batch(3, 1), Some(TOKEN), &limits)
            .await
            .unwrap(),
        QuicReply::Ack(_)
    ));

    // A certificate from another CA fails the handshake.
    let other = DevCa::generate("someone else").unwrap();
    let (stranger, _, _) = other.issue(&["edge-x"], true).unwrap();
    let client = common::client_endpoint(ca.certificate(), Some(stranger));
    let refused = match client.connect(addr, "localhost").unwrap().await {
        Err(_) => true,
        // TLS 1.3 clients learn of a rejected certificate on their first exchange.
        Ok(conn) => send_batch(&conn, &batch(4, 1), None, &limits)
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from another CA must not get in");

    // An edge that does not trust the server's CA refuses the server.
    let wary = common::client_endpoint(other.certificate(), None);
    assert!(wary.connect(addr, "localhost").unwrap().await.is_err());

    // Everything accepted is in the log once.
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.read("local.s", 0, 100).unwrap().len(), 16);
}

#[tokio::test]
async fn expired_certificates_and_connections_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("test CA").unwrap();
    let limits = QuicLimits {
        max_connections: 1,
        max_streams_per_connection: 2,
    };
    let addr = server_with(dir.path(), &ca, limits).await.addr;
    let wire = WireLimits::default();

    let now = time::OffsetDateTime::now_utc();
    let (expired, _, _) = ca
        .issue_valid(
            &["edge-old"],
            true,
            Some((
                now - time::Duration::days(30),
                now - time::Duration::days(1),
            )),
        )
        .unwrap();
    let client = common::client_endpoint(ca.certificate(), Some(expired));
    let refused = match client.connect(addr, "localhost").unwrap().await {
        Err(_) => true,
        Ok(conn) => send_batch(&conn, &batch(1, 1), None, &wire).await.is_err(),
    };
    assert!(refused, "an expired certificate must not get in");

    // One connection is served; more streams than the per-connection limit still all complete, in turn.
    let (edge, _, _) = ca.issue(&["edge-1"], true).unwrap();
    let client = common::client_endpoint(ca.certificate(), Some(edge.clone()));
    // The refused handshake's place is freed as the server notices it ended: poll until it has.
    let mut conn = None;
    for _ in 0..100 {
        if let Ok(c) = client.connect(addr, "localhost").unwrap().await {
            conn = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let conn = conn.expect("a connection within the limit is served");
    let batches: Vec<Batch> = (10..15).map(|i| batch(i, 3)).collect();
    let replies = futures_join_all(&conn, batches, &wire).await;
    assert!(
        replies.iter().all(|r| matches!(r, QuicReply::Ack(_))),
        "{replies:?}"
    );

    // A second connection is refused while the first is open.
    let second = common::client_endpoint(ca.certificate(), Some(edge));
    assert!(second.connect(addr, "localhost").unwrap().await.is_err());
}

async fn futures_join_all(
    conn: &quinn::Connection,
    batches: Vec<Batch>,
    wire: &WireLimits,
) -> Vec<QuicReply> {
    let mut tasks = tokio::task::JoinSet::new();
    for b in batches {
        let (conn, wire) = (conn.clone(), *wire);
        tasks.spawn(async move {
            send_batch(&conn, &b, None, &wire)
                .await
                .map_err(|e| e.to_string())
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap().unwrap());
    }
    out
}

#[test]
fn a_development_pki_is_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = ensure_dev_pki(dir.path()).unwrap();
    let again = ensure_dev_pki(dir.path()).unwrap();
    assert_eq!(first.ca, again.ca);
    for f in [
        "ca.pem",
        "server.pem",
        "server.key.pem",
        "edge.pem",
        "edge.key.pem",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    assert!(first.edge_files.0.ends_with("edge.pem"));
    #[cfg(unix)]
    for key in ["server.key.pem", "edge.key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is readable by others: {mode:o}");
    }
}

#[tokio::test]
async fn a_stopping_server_answers_batches_on_their_way_and_takes_no_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate("test CA").unwrap();
    let Served {
        addr,
        stop: stop_tx,
        serving,
    } = server_with(dir.path(), &ca, QuicLimits::default()).await;
    let (edge_id, _, _) = ca.issue(&["edge-1"], true).unwrap();
    let client = common::client_endpoint(ca.certificate(), Some(edge_id));
    let conn = client.connect(addr, "localhost").unwrap().await.unwrap();

    // Half a batch is on its way when the server is told to stop.
    let b = batch(9, 20);
    let mut request = vec![0u8];
    request.extend_from_slice(&b.encode(false));
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let half = request.len() / 2;
    send.write_all(&request[..half]).await.unwrap();
    // The server takes streams in order, so once a later batch is answered, this stream is
    // one the server has taken.
    assert!(matches!(
        send_batch(&conn, &batch(8, 1), None, &WireLimits::default())
            .await
            .unwrap(),
        QuicReply::Ack(_)
    ));
    stop_tx.send(true).unwrap();

    // The rest arrives after the stop, and the batch is still answered in full.
    send.write_all(&request[half..]).await.unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(1 << 20).await.unwrap();
    assert_eq!(answer.first(), Some(&status::OK));
    let ack =
        sluice_shared::BatchAck::decode_for(&answer[1..], &b, &WireLimits::default()).unwrap();
    assert_eq!(ack.verdicts, vec![EventAck::Accepted; 20]);

    // Then the connection closes, nothing new is taken, and the server returns.
    assert!(
        send_batch(&conn, &batch(10, 1), None, &WireLimits::default())
            .await
            .is_err()
    );
    tokio::time::timeout(std::time::Duration::from_secs(30), serving)
        .await
        .expect("the server returns once its connections are closed")
        .unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.read("local.s", 0, 100).unwrap().len(), 21);
}
