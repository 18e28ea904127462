//! Stream pages: every stream with its live rates, last event and alert;
//! one stream's config, its flow over the last hour as plots (drawn by the
//! page from `/console/api/flow`), and its canary status.

use super::flow::KINDS;
use super::html::{esc, json_cell, page, url, when};
use super::{Console, query};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write;

/// Every stream to show: the configured names and those events came in for.
fn names(console: &Console) -> Vec<String> {
    let streams = console.0.streams.get();
    let mut all: BTreeSet<String> = streams
        .entries()
        .filter(|e| !e.key.starts_with('/'))
        .map(|e| e.key.clone())
        .collect();
    all.extend(console.0.metrics.flow.streams());
    all.into_iter().collect()
}

fn alert_badge(alert: Option<super::Alert>) -> String {
    match alert {
        Some(a) => format!(
            r#"<span class="alert" data-alert="{n}">{n}</span>"#,
            n = a.name()
        ),
        None => r#"<span class="ok">ok</span>"#.into(),
    }
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// `GET /console/`: every stream.
pub async fn overview(State(console): State<Console>) -> Response {
    let streams = console.0.streams.get();
    let after = console.0.alert_after_secs;
    let mut rows = String::new();
    for name in names(&console) {
        let f = console.0.metrics.flow.stream(&name, 1);
        let title = streams
            .get(&name)
            .map(|e| e.settings.schema_title.clone())
            .unwrap_or_default();
        let _ = write!(
            rows,
            r#"<tr data-stream="{n}"><td><a href="/console/stream?name={u}">{n}</a></td><td><code>{t}</code></td><td class="num">{a}</td><td class="num">{i}</td><td class="num">{r}</td><td class="num">{d}</td><td>{last}</td><td>{badge}</td></tr>"#,
            n = esc(&name),
            u = url(&name),
            t = esc(&title),
            a = rate(f.recent_rate["accepted"]),
            i = rate(f.recent_rate["invalid"]),
            r = rate(f.recent_rate["rate_limited"]),
            d = rate(f.recent_rate["duplicate"]),
            last = when(f.last_event_ms),
            badge = alert_badge(f.alert),
        );
    }
    let alerts = console.0.metrics.flow.alerts();
    let summary = if alerts.is_empty() {
        r#"<p class="ok" id="alerts">No stream is alerted.</p>"#.to_owned()
    } else {
        let items: String = alerts
            .iter()
            .map(|(s, a)| format!("<li><code>{}</code>: {}</li>", esc(s), a.name()))
            .collect();
        format!(r#"<div class="alerts" id="alerts"><p>Alerted streams:</p><ul>{items}</ul></div>"#)
    };
    let body = format!(
        r#"<h1>Streams</h1>
{summary}
<p class="muted">Events per second over the last {after} s; a stream that was flowing and has had no accepted event for {after} s is alerted <code>zero_flow</code>, one far under its last hour's rate <code>under_rate</code>. This page refreshes every 5 s.</p>
<table class="streams" id="streams"><thead><tr><th>stream</th><th>schema</th><th>accepted/s</th><th>invalid/s</th><th>rate-limited/s</th><th>duplicate/s</th><th>last event</th><th>state</th></tr></thead><tbody>{rows}</tbody></table>
<script>setTimeout(() => location.reload(), 5000)</script>"#
    );
    page("Streams", "streams", &body).into_response()
}

/// `GET /console/stream?name=…`: one stream.
pub async fn show(State(console): State<Console>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw.as_deref());
    let name = q.get("name").cloned().unwrap_or_default();
    let streams = console.0.streams.get();
    let entry = streams.get(&name);
    let flow = console.0.metrics.flow.stream(&name, 1);
    if entry.is_none() && flow.totals.values().all(|n| *n == 0) {
        return (
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                "streams",
                &format!(
                    r#"<h1>Not found</h1><p class="error">No stream {} is configured or has had events.</p>"#,
                    esc(&name)
                ),
            ),
        )
            .into_response();
    }
    let mut config = String::new();
    if let Some(e) = entry {
        if let Value::Object(map) = &e.raw {
            for (k, v) in map {
                let _ = write!(
                    config,
                    "<tr><th><code>{}</code></th><td>{}</td></tr>",
                    esc(k),
                    json_cell(v)
                );
            }
        }
        if e.key != name {
            let _ = write!(
                config,
                "<tr><th>configured as</th><td><code>{}</code></td></tr>",
                esc(&e.key)
            );
        }
    } else {
        config.push_str(r#"<tr><td class="empty">Not in the stream config.</td></tr>"#);
    }
    let canary = match entry {
        Some(e) if e.settings.canary_events_enabled => {
            let topic = e.produce_topic(&name);
            let seen = last_canary(&console, topic).await;
            match seen {
                Ok(Some(ms)) => format!(
                    r#"<span class="ok" id="canary">canary events enabled; the last one arrived {}</span>"#,
                    when(ms)
                ),
                Ok(None) => r#"<span class="alert" id="canary">canary events enabled, but none among the stream's last 1,000 events</span>"#.into(),
                Err(e) => format!(
                    r#"<span class="alert" id="canary">canary events enabled; the stream could not be read: {}</span>"#,
                    esc(&e)
                ),
            }
        }
        _ => r#"<span class="muted" id="canary">canary events not enabled</span>"#.into(),
    };
    let plots: String = KINDS
        .iter()
        .map(|k| {
            format!(
                r#"<figure class="plot"><figcaption>{label}/s <span class="now" data-now="{k}"></span></figcaption><svg data-series="{k}" viewBox="0 0 600 100" preserveAspectRatio="none"></svg></figure>"#,
                label = k.replace('_', "-")
            )
        })
        .collect();
    let totals: String = flow
        .totals
        .iter()
        .map(|(k, n)| {
            format!(
                r#"<li>{}: <b data-total="{k}">{n}</b></li>"#,
                k.replace('_', "-")
            )
        })
        .collect();
    let body = format!(
        r#"<h1><code>{n}</code> <span id="state">{badge}</span></h1>
<p>Last event: <b id="last-event">{last}</b> · {canary} · <a href="/console/tail?stream={u}">live tail</a></p>
<ul class="totals">{totals}</ul>
<section class="plots" data-flow="{n}">{plots}</section>
<h2>Config</h2>
<table class="config" id="config">{config}</table>"#,
        n = esc(&name),
        u = url(&name),
        badge = alert_badge(flow.alert),
        last = when(flow.last_event_ms),
    );
    page(&name, "streams", &body).into_response()
}

/// How long a canary check is reused: it reads the stream's newest segment.
const CANARY_CHECK_SECS: u64 = 30;

/// When the newest canary event among `topic`'s last 1,000 arrived, checked
/// at most every [`CANARY_CHECK_SECS`] per topic, off the async threads.
async fn last_canary(console: &Console, topic: String) -> Result<Option<i64>, String> {
    let fresh = console
        .0
        .canaries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&topic)
        .filter(|(at, _)| at.elapsed().as_secs() < CANARY_CHECK_SECS)
        .map(|(_, seen)| seen.clone());
    if let Some(seen) = fresh {
        return seen;
    }
    let tails = console.0.tails.clone();
    let t = topic.clone();
    let seen = tokio::task::spawn_blocking(move || tails.last_canary(&t, 1000))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    console
        .0
        .canaries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(topic, (std::time::Instant::now(), seen.clone()));
    seen
}

/// `GET /console/api/flow?stream=…`: the stream's flow over the last hour, as JSON.
pub async fn flow(State(console): State<Console>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw.as_deref());
    let name = q.get("stream").cloned().unwrap_or_default();
    let f = console.0.metrics.flow.stream(&name, super::flow::HISTORY);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::to_string(&f).unwrap_or_else(|_| "{}".into()),
    )
        .into_response()
}
