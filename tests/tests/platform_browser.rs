//! A real browser: headless Chromium opens a page this test serves, whose
//! script sends one event with `navigator.sendBeacon` (text/plain, hasty)
//! and one with `fetch` (application/json, so with a CORS preflight) to a
//! native edge on another origin. Both arrive in the sink with `meta.id`,
//! `meta.dt` and the browser's user agent, which the stream's config asks
//! the edge to fill in.

use sluice_tests::{
    Edge, KillOnDrop, Scratch, log_events, metric, terminate, wait_until, workspace,
};
use std::io::{Read, Write};
use std::process::{Command, Stdio};

const TOKEN: &str = "browser-test-token";

/// Serves `page` to every request on a free loopback port, from a thread.
fn serve_page(page: String) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                page.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(page.as_bytes());
        }
    });
    addr
}

#[test]
fn beacons_and_fetches_from_a_browser_arrive_enriched() {
    let streams = std::fs::read_to_string(workspace().join("schemas/streams.yaml")).unwrap();
    let scratch = Scratch::with_streams(&streams);
    let mut aggregator = scratch.aggregator(TOKEN, &[]);
    let Edge {
        child: mut edge_child,
        http: edge,
    } = scratch.edge(
        &aggregator,
        &[("SLUICE_EDGE_BATCH__HASTY_AGE_MS", "50".as_ref())],
    );
    let page = format!(
        r#"<!doctype html><html><head><title>sluice</title></head><body><script>
const edge = "http://{edge}";
const event = (element) => ({{
  "$schema": "/sluice/browser/interaction/1.0.0",
  "meta": {{"stream": "sluice.browser.interaction"}},
  "dt": new Date().toISOString(),
  "action": "click",
  "element": element,
  "performer": {{"session_id": "00000000ab"}}
}});
navigator.sendBeacon(edge + "/v1/events?hasty=true", JSON.stringify(event("beacon")));
fetch(edge + "/v1/events", {{
  method: "POST",
  headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify(event("fetch"))
}}).then((r) => {{ document.title = "fetch " + r.status; }});
</script></body></html>"#
    );
    let page_addr = serve_page(page);
    let profile = tempfile::tempdir().unwrap();
    let browser =
        Command::new(std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "chromium".into()))
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("http://{page_addr}/"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium runs (scripts/test installs Debian's chromium when missing)");
    let browser = KillOnDrop(browser);
    wait_until("both browser events are delivered", || {
        metric(edge, "sluice_edge_events_total{outcome=\"delivered\"}") == 2.0
    });
    drop(browser);
    assert_eq!(
        metric(edge, "sluice_edge_events_total{outcome=\"invalid\"}"),
        0.0
    );
    assert!(terminate(&mut edge_child).success());
    assert!(terminate(&mut aggregator.child).success());

    let events = log_events(&scratch.data, "local.sluice.browser.interaction");
    let mut elements: Vec<&str> = events
        .iter()
        .map(|e| e["element"].as_str().unwrap())
        .collect();
    elements.sort();
    assert_eq!(elements, vec!["beacon", "fetch"]);
    for e in &events {
        assert_eq!(e["meta"]["id"].as_str().map(str::len), Some(36), "{e}");
        assert!(e["meta"]["dt"].as_str().unwrap().ends_with('Z'), "{e}");
        let agent = e["http"]["request_headers"]["user-agent"]
            .as_str()
            .unwrap_or_default();
        assert!(agent.contains("Chrome"), "no browser user agent: {e}");
    }
}
