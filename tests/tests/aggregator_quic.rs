//! The real `sluice aggregator` process takes batches over QUIC from an edge
//! holding the development certificate it generated on first start.

use sluice_host::quic::{client_endpoint, send_batch};
use sluice_host::tls::{Identity, ca_from_pem};
use sluice_shared::LinkReply as QuicReply;
use sluice_shared::{Batch, BatchEvent, EventAck, WireLimits};
use sluice_tests::{Aggregator, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_with_the_generated_certificate_is_served_over_quic() {
    let scratch = Scratch::new("quic.test");
    let Aggregator {
        mut child,
        quic: quic_addr,
        ..
    } = scratch.aggregator("unused-here", &[]);

    let tls = scratch.data.join("tls");
    let ca = ca_from_pem(&tls.join("ca.pem")).unwrap();
    let edge = Identity::from_pem_files(&tls.join("edge.pem"), &tls.join("edge.key.pem")).unwrap();
    let client = client_endpoint(ca, Some(edge)).unwrap();
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
            json: b"{\"over\":\"quic\"}".to_vec().into(),
        }],
        errors: Vec::new(),
    };
    let reply = send_batch(&conn, &batch, None, &WireLimits::default())
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
