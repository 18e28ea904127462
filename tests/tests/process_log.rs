//! `sluice process` over the embedded log of a real `sluice up`, against a
//! small HTTP service this test runs that records every call:
//! - a purge rule calls it once per matching event; a 503 goes to the retry
//!   stream and is tried again after the rule's delay, then succeeds; a 400
//!   lands in the error stream; a repeated event id calls once; a stopped
//!   and restarted processor goes on from its committed position;
//! - under `sluice up --process`: link events keep the dependency index; a
//!   template edit with 1,200 dependents makes 1,200 re-render calls in three
//!   pages (two continue events); of two edits of one template sent
//!   together, the newer makes all 1,200 calls and the older's fan-out is
//!   cut off after its first page at most; events of one key run in order
//!   while other keys run beside them; a `derive` rule writes its event.

use serde_json::{Value, json};
use sluice_tests::recorder::{count, count_prefix, recording_service};
use sluice_tests::{
    KillOnDrop, Up, binary, free_port, log_events, metric, post_events_created, terminate,
    wait_until, workspace,
};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn event(message: &str) -> Value {
    json!({
        "$schema": "/sluice/test/event/1.1.0",
        "meta": {"stream": "sluice.test.event"},
        "dt": "2026-12-06T12:00:00Z",
        "message": message,
    })
}

/// The repository's stream config with the aggregator's dedupe of `sluice.test.event` off, so
/// that a repeated id reaches the log and the processor's own dedupe is what drops it.
fn streams_without_dedupe(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(workspace().join("schemas/streams.yaml")).unwrap();
    let anchor = "  sluice.test.event:\n    schema_title: sluice/test/event\n";
    assert!(
        text.contains(anchor),
        "the stream config has sluice.test.event"
    );
    let path = dir.join("streams.yaml");
    std::fs::write(
        &path,
        text.replace(anchor, &format!("{anchor}    dedupe: false\n")),
    )
    .unwrap();
    path
}

fn start_processor(
    rules: &Path,
    data: &Path,
    streams: &Path,
    edge: SocketAddr,
    metrics: SocketAddr,
) -> KillOnDrop {
    KillOnDrop(
        Command::new(binary("sluice"))
            .args(["process", "--rules"])
            .arg(rules)
            .arg("--data-dir")
            .arg(data)
            .arg("--streams")
            .arg(streams)
            .args(["--edge", &format!("http://{edge}")])
            .args(["--metrics-listen", &metrics.to_string()])
            .current_dir(workspace())
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::piped())
            .spawn()
            .expect("sluice process starts"),
    )
}

fn stdout_of(child: &mut KillOnDrop) -> String {
    let mut s = String::new();
    if let Some(mut o) = child.0.stdout.take() {
        let _ = o.read_to_string(&mut s);
    }
    s
}

fn topic_events(data: &Path, topic: &str) -> Vec<Value> {
    if !data.join("aggregator/log").join(topic).exists() {
        return Vec::new();
    }
    log_events(&data.join("aggregator"), topic)
}

#[test]
fn a_purge_rule_calls_once_per_event_retries_through_the_retry_stream_reports_to_the_error_stream_and_resumes()
 {
    let (port, calls) = recording_service();
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let streams = streams_without_dedupe(scratch.path());
    let rules = scratch.path().join("rules.yaml");
    std::fs::write(
        &rules,
        format!(
            "rules:\n  purge:\n    topic: sluice.test.event\n    match:\n      message: '/^purge-(?<name>[a-z]+)$/'\n    exec:\n      method: post\n      uri: 'http://127.0.0.1:{port}/purge/{{{{match.message.name}}}}'\n      body: {{id: '{{{{message.meta.id}}}}'}}\n    retry_delay: 700\n    retry_limit: 2\n    concurrency: 4\n"
        ),
    )
    .unwrap();
    let check = Command::new(binary("sluice"))
        .args(["process", "--check", "--rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(check.status.success());
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        "purge: 1 case(s) over sluice.test.event\nrules=1\n"
    );

    let up = Up::start(
        &["up".into(), "--streams".into(), streams.clone().into()],
        &data,
    );
    let edge = up.edge;
    let mut alpha = event("purge-alpha");
    alpha["meta"]["id"] = json!("5d1c7e0a-0000-4000-8000-00000000a1fa");
    post_events_created(
        edge,
        &[
            alpha.clone(),
            event("not a purge"),
            event("purge-flaky"),
            event("purge-bad"),
            event("purge-beta"),
        ],
    );
    // The same id again (a resend): it reaches the log, and runs once.
    post_events_created(edge, &[alpha]);
    assert_eq!(
        topic_events(&data, "local.sluice.test.event").len(),
        6,
        "the repeat is in the log"
    );
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut processor = start_processor(&rules, &data, &streams, edge, metrics);
    let m = |name: &str| {
        metric(
            metrics,
            &format!("sluice_process_{name}_total{{rule=\"purge\"}}"),
        )
    };
    wait_until("four purges, one of them twice, and a report", || {
        count(&calls, "/purge/beta") == 1
            && count(&calls, "/purge/flaky") == 2
            && topic_events(&data, "local.sluice.process.error").len() == 1
    });
    assert_eq!(count(&calls, "/purge/alpha"), 1, "the repeated id ran once");
    assert_eq!(count(&calls, "/purge/bad"), 1, "a 400 is not retried");
    {
        let c = calls.lock().unwrap();
        let flaky: Vec<Instant> = c
            .iter()
            .filter(|(p, _)| p == "/purge/flaky")
            .map(|(_, t)| *t)
            .collect();
        assert!(
            flaky[1] - flaky[0] >= Duration::from_millis(700),
            "retried after the rule's delay"
        );
        assert_eq!(c.len(), 5);
    }
    let retries = topic_events(&data, "local.sluice.process.retry");
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert_eq!(retries[0]["rule"], "purge");
    assert_eq!(retries[0]["attempt"], 1);
    assert_eq!(retries[0]["retries_left"], 1);
    assert_eq!(retries[0]["reason"], "status 503");
    assert_eq!(retries[0]["original_event"]["message"], "purge-flaky");
    let errors = topic_events(&data, "local.sluice.process.error");
    assert_eq!(errors[0]["$schema"], "/error/2.1.0");
    assert_eq!(errors[0]["errored_stream_name"], "sluice.test.event");
    assert_eq!(errors[0]["emitter_id"], "sluice-process/purge");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("/purge/bad") && message.contains("status 400"),
        "{message}"
    );
    assert!(
        errors[0]["raw_event"]
            .as_str()
            .unwrap()
            .contains("purge-bad")
    );
    assert_eq!(m("matched"), 4.0);
    assert_eq!(m("executed"), 3.0, "alpha, beta and flaky's retry");
    assert_eq!(m("retried"), 1.0);
    assert_eq!(m("failed"), 1.0);
    assert_eq!(m("duplicate"), 1.0);
    wait_until("no lag", || {
        metric(metrics, "sluice_process_lag_records{rule=\"purge\"}") == 0.0
    });

    // Stopped and started again, the processor goes on after what it committed.
    assert!(terminate(&mut processor).success());
    let out = stdout_of(&mut processor);
    assert!(
        out.contains("purge: matched=4 executed=3 retried=1 failed=1 duplicate=1"),
        "{out}"
    );
    post_events_created(edge, &[event("purge-gamma")]);
    let mut again = start_processor(&rules, &data, &streams, edge, metrics);
    wait_until("the purge sent while it was stopped", || {
        count(&calls, "/purge/gamma") == 1
    });
    assert!(terminate(&mut again).success());
    let out = stdout_of(&mut again);
    assert!(
        out.contains("purge: matched=1 executed=1 retried=0 failed=0 duplicate=0"),
        "{out}"
    );
    assert_eq!(calls.lock().unwrap().len(), 6, "nothing was called twice");
    up.stop();
}

#[test]
fn sluice_up_process_keeps_the_index_fans_out_in_pages_and_cuts_off_an_older_edit() {
    let (port, calls) = recording_service();
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let rules = scratch.path().join("rules.yaml");
    std::fs::write(
        &rules,
        format!(
            r#"rules:
  links:
    topic: sluice.test.event
    match: {{message: links}}
    track:
      dependent: '{{{{message.tags[0]}}}}'
      add: '{{{{message.tags[1]}}}}'
  rerender:
    topic: sluice.test.event
    match:
      message: '/^edit (?<title>.+)$/'
    fanout:
      target: '{{{{match.message.title}}}}'
      exec:
        method: post
        uri: 'http://127.0.0.1:{port}/render/{{{{message.dependent}}}}?root={{{{message.root_event.dt_ms}}}}'
  ordered:
    topic: sluice.test.event
    match:
      message: '/^order (?<k>[a-z]) (?<n>[0-9]+)$/'
    key: '{{{{match.message.k}}}}'
    concurrency: 8
    exec: {{uri: 'http://127.0.0.1:{port}/slow/{{{{match.message.k}}}}/{{{{match.message.n}}}}'}}
  copy:
    topic: sluice.test.event
    match: {{message: hello}}
    derive:
      stream: sluice.test.event
      fields: {{message: 'derived from {{{{message.meta.id}}}}'}}
"#
        ),
    )
    .unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let up = Up::start(
        &[
            "up".into(),
            "--process".into(),
            rules.clone().into(),
            "--process-metrics-addr".into(),
            metrics_addr.clone().into(),
        ],
        &data,
    );
    assert!(
        up.printed.contains("processor: 4 rule(s)"),
        "{}",
        up.printed
    );
    let metrics: SocketAddr = metrics_addr.parse().unwrap();
    let m = |name: &str, rule: &str| {
        metric(
            metrics,
            &format!("sluice_process_{name}_total{{rule=\"{rule}\"}}"),
        )
    };

    // 1,200 pages use Template:A, one uses Template:B.
    let mut links: Vec<Value> = (0..1200)
        .map(|i| {
            let mut e = event("links");
            e["tags"] = json!([format!("Page{i:04}"), "Template:A"]);
            e
        })
        .collect();
    let mut b = event("links");
    b["tags"] = json!(["Other", "Template:B"]);
    links.push(b);
    for chunk in links.chunks(400) {
        post_events_created(up.edge, chunk);
    }
    let mut hello = event("hello");
    hello["meta"]["id"] = json!("5d1c7e0a-0000-4000-8000-0000000000e1");
    post_events_created(up.edge, &[hello]);
    wait_until("the index holds every edge", || {
        m("executed", "links") == 1201.0
    });

    // One edit: 1,200 calls in three pages, two continue events.
    let mut edit = event("edit Template:A");
    edit["dt"] = json!("2026-12-06T12:00:00Z");
    post_events_created(up.edge, &[edit]);
    let root = "1796558400000";
    wait_until("1,200 re-render calls", || {
        count_prefix(&calls, "/render/") == 1200
    });
    let conts = topic_events(&data, "local.sluice.process.continue");
    assert_eq!(conts.len(), 2, "three pages: two continue events");
    assert_eq!(conts[0]["cursor"], "Page0499");
    assert_eq!(conts[1]["cursor"], "Page0999");
    assert_eq!(conts[0]["root_event"]["dt_ms"].to_string(), root);
    {
        let c = calls.lock().unwrap();
        let mut pages: Vec<&str> = c.iter().map(|(p, _)| p.as_str()).collect();
        pages.sort();
        pages.dedup();
        assert_eq!(pages.len(), 1200, "each dependent once");
        assert!(pages.contains(&format!("/render/Page0000?root={root}").as_str()));
        assert!(pages.contains(&format!("/render/Page1199?root={root}").as_str()));
    }

    // Two edits together: the newer one's fan-out runs whole, the older's is cut off.
    let mut older = event("edit Template:A");
    older["dt"] = json!("2026-12-06T13:00:00Z");
    let mut newer = event("edit Template:A");
    newer["dt"] = json!("2026-12-06T13:00:01Z");
    post_events_created(up.edge, &[older, newer]);
    let (old_root, new_root) = ("1796562000000", "1796562001000");
    wait_until("the newer edit's 1,200 calls", || {
        count_prefix(&calls, "/render/") >= 2400
            && calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(p, _)| p.ends_with(&format!("?root={new_root}")))
                .count()
                == 1200
    });
    wait_until("the older fan-out cut off", || {
        m("cut_off", "rerender") >= 1.0
    });
    // Whatever is still under way ends once the continue events are read.
    wait_until("no lag", || {
        metric(metrics, "sluice_process_lag_records{rule=\"rerender\"}") == 0.0
    });
    let older_calls = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.ends_with(&format!("?root={old_root}")))
        .count();
    assert!(
        older_calls == 0 || older_calls == 500,
        "the older edit made {older_calls} calls: none (cut off at once) or its first page"
    );
    assert_eq!(m("matched", "rerender"), 3.0);
    assert_eq!(
        m("executed", "rerender") as usize,
        2400 + older_calls,
        "every call counted"
    );

    // One key's events in the order they were read, two keys side by side.
    let orders: Vec<Value> = (0..10)
        .flat_map(|n| {
            [
                event(&format!("order a {n}")),
                event(&format!("order b {n}")),
            ]
        })
        .collect();
    post_events_created(up.edge, &orders);
    wait_until("20 ordered calls", || count_prefix(&calls, "/slow/") == 20);
    let slow: Vec<String> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.starts_with("/slow/"))
        .map(|(p, _)| p.clone())
        .collect();
    for k in ["a", "b"] {
        let got: Vec<&str> = slow
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("/slow/{k}/")))
            .collect();
        let want: Vec<String> = (0..10).map(|n| n.to_string()).collect();
        assert_eq!(got, want, "key {k} in order");
    }
    let first_b = slow.iter().position(|p| p.starts_with("/slow/b/")).unwrap();
    let last_a = slow
        .iter()
        .rposition(|p| p.starts_with("/slow/a/"))
        .unwrap();
    assert!(first_b < last_a, "the two keys ran side by side: {slow:?}");

    // The derive rule's event, with an id made from the one it came from.
    let derived: Vec<Value> = topic_events(&data, "local.sluice.test.event")
        .into_iter()
        .filter(|e| e["message"] == "derived from 5d1c7e0a-0000-4000-8000-0000000000e1")
        .collect();
    assert_eq!(derived.len(), 1);
    assert_eq!(m("produced", "copy"), 1.0);

    let out = up.stop();
    assert!(out.contains("links: matched=1201 executed=1201"), "{out}");
}
