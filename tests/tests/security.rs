//! The aggregator's doors, from outside: HTTP batch ingest refuses a missing
//! or wrong bearer token with 401 and never writes either token to its log
//! (at debug level too); the schema file service answers only from what it
//! loaded, so no path reaches a file it chose; edges cannot make it fetch.
//! (QUIC refusals of missing, foreign and expired certificates are in
//! `aggregator/tests/quic_ingest.rs`; CORS and client addresses in
//! `edge_http.rs`; hostile `$schema` URIs at the edges in `bad_input.rs`.)

use sluice_shared::Batch;
use sluice_tests::{
    Aggregator, Scratch, http_call, http_get, numbered_event, post_batch, start_aggregator_logging,
    terminate, workspace,
};

const TOKEN: &str = "s3cret-token-4c1d";

#[test]
fn batch_ingest_refuses_bad_tokens_and_logs_no_secret() {
    let scratch = Scratch::new("security.test");
    let log_path = scratch.root.join("aggregator.log");
    let log = std::fs::File::create(&log_path).expect("the log file is created");
    let repos = format!("[{:?}]", workspace().join("schemas"));
    let Aggregator {
        mut child, http, ..
    } = start_aggregator_logging(
        &[
            ("SLUICE_AGGREGATOR_DATA_DIR", scratch.data.as_os_str()),
            ("SLUICE_AGGREGATOR_STREAMS", scratch.streams.as_os_str()),
            ("SLUICE_AGGREGATOR_REPOSITORIES", repos.as_ref()),
            ("SLUICE_AGGREGATOR_HTTP__TOKEN", TOKEN.as_ref()),
            ("SLUICE_LOG", "debug".as_ref()),
        ],
        log.into(),
    );
    let batch = Batch {
        id: [3; 16],
        events: vec![numbered_event(
            "security.test",
            "local.security.test",
            1,
            1_795_780_800_000,
        )],
        errors: Vec::new(),
    };
    let frame = batch.encode(true);
    let wrong = "Bearer wrong-guess-9f2e";
    let near = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let lower = format!("bearer {TOKEN}x");
    for headers in [
        vec![],
        vec![("Authorization", wrong)],
        vec![("Authorization", near.as_str())],
        vec![("Authorization", lower.as_str())],
        vec![("Authorization", TOKEN)],
    ] {
        let r = http_call(http, "POST", "/v1/batches", &headers, &frame).expect("it answers");
        assert_eq!(r.status, 401, "{headers:?}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("bearer token"), "{body}");
        assert!(!body.contains(TOKEN), "the answer holds the token");
    }
    // The right token gets in.
    let ack = post_batch(http, TOKEN, &batch).expect("the right token is taken");
    assert_eq!(ack.verdicts.len(), 1);

    // Schema files come from what was loaded, never from a path a request names.
    for path in [
        "/repositories/schemas/jsonschema/../../../../etc/passwd",
        "/repositories/schemas/jsonschema/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/repositories/schemas/%2e%2e/%2e%2e/etc/passwd",
        "/repositories/..%2f..%2fetc/passwd",
        "/repositories/schemas/file:///etc/passwd",
    ] {
        let (status, body) = http_get(http, path).expect("it answers");
        assert!(status == 404 || status == 400, "{path}: {status}");
        assert!(
            !String::from_utf8_lossy(&body).contains("root:"),
            "{path} read a file"
        );
    }
    let (status, _) = http_get(
        http,
        "/repositories/schemas/jsonschema/sluice/test/event/1.0.0",
    )
    .expect("it answers");
    assert_eq!(status, 200, "a loaded schema is served");

    assert!(terminate(&mut child).success());
    let logged = std::fs::read_to_string(&log_path).expect("the log reads");
    assert!(
        logged.contains("bearer token"),
        "refusals are logged with their reason:\n{logged}"
    );
    for secret in [TOKEN, "wrong-guess-9f2e", &TOKEN[..TOKEN.len() - 1]] {
        assert!(!logged.contains(secret), "the log holds {secret:?}");
    }
}
