//! The real `sluice aggregator` process takes batches over QUIC from an edge
//! holding the development certificate it generated on first start.

use sluice_aggregator::quic::{self, QuicReply};
use sluice_aggregator::tls::{Identity, certs_from_pem, key_from_pem};
use sluice_shared::{Batch, BatchEvent, EventAck, WireLimits};
use sluice_tests::{KillOnDrop, binary};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_with_the_generated_certificate_is_served_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let streams = dir.path().join("streams.yaml");
    std::fs::write(
        &streams,
        "streams:\n  quic.test:\n    schema_title: sluice/test/event\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(binary("sluice"))
        .arg("aggregator")
        .env("SLUICE_AGGREGATOR_DATA_DIR", &data)
        .env("SLUICE_AGGREGATOR_STREAMS", &streams)
        .env(
            "SLUICE_AGGREGATOR_REPOSITORIES",
            format!("[{:?}]", sluice_tests::workspace().join("schemas")),
        )
        .env("SLUICE_AGGREGATOR_HTTP__LISTEN", "127.0.0.1:0")
        .env("SLUICE_AGGREGATOR_QUIC__LISTEN", "127.0.0.1:0")
        .env("SLUICE_AGGREGATOR_HTTP__TOKEN", "unused-here")
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("sluice aggregator starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut child = KillOnDrop(child);
    let quic_addr: SocketAddr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("aggregator listening on quic://")
                .map(|a| a.parse().expect("an address"))
        })
        .expect("the aggregator prints its QUIC address");

    let tls = data.join("tls");
    let ca = certs_from_pem(&tls.join("ca.pem")).unwrap().remove(0);
    let edge = Identity {
        chain: certs_from_pem(&tls.join("edge.pem")).unwrap(),
        key: key_from_pem(&tls.join("edge.key.pem")).unwrap(),
    };
    let client = quic::client_endpoint(ca, Some(edge)).unwrap();
    let conn = client
        .connect(quic_addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let batch = Batch {
        id: [5; 16],
        events: vec![BatchEvent {
            stream: "quic.test".into(),
            topic: "local.quic.test".into(),
            partition_key: None,
            rate_key: None,
            id: [9; 16],
            received_ms: 1_795_780_800_000,
            dt_ms: 1_795_780_800_000,
            schema_uri: "/sluice/test/event/1.0.0".into(),
            dedupe: true,
            json: b"{\"over\":\"quic\"}".to_vec(),
        }],
        errors: Vec::new(),
    };
    let reply = quic::send_batch(&conn, &batch, None, &WireLimits::default())
        .await
        .unwrap();
    assert!(
        matches!(reply, QuicReply::Ack(ref a) if a.verdicts == [EventAck::Accepted]),
        "{reply:?}"
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the aggregator is still running"
    );
}
