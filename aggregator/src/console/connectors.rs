//! The connectors page: each sink's rows written, lag and dead letters per
//! stream, read from the connectors' own `/metrics` (they run in their own
//! process, or beside the aggregator under `sluice up --connect`).

use super::Console;
use super::html::{esc, page};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The metrics shown, by their name without the `sluice_connect_` prefix.
const SHOWN: [(&str, &str); 5] = [
    ("rows_written_total", "rows written"),
    ("lag_records", "lag (records)"),
    ("lag_seconds", "lag (s)"),
    ("dead_letters_total", "dead letters"),
    ("stream_stopped", "stopped"),
];

/// `(sink, stream) → metric → value` from a Prometheus text exposition.
type Table = BTreeMap<(String, String), BTreeMap<&'static str, f64>>;

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// The connector metrics in `text`.
fn parse(text: &str, table: &mut Table) {
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix("sluice_connect_") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Some((key, _)) = SHOWN.iter().find(|(k, _)| *k == name) else {
            continue;
        };
        let (Some(sink), Some(stream), Ok(v)) = (
            label(labels, "sink"),
            label(labels, "stream"),
            value.trim().parse::<f64>(),
        ) else {
            continue;
        };
        table
            .entry((sink.to_owned(), stream.to_owned()))
            .or_default()
            .insert(key, v);
    }
}

/// `GET` of a plain-HTTP address, the body as text.
async fn fetch(address: &str) -> Result<String, String> {
    let rest = address
        .strip_prefix("http://")
        .ok_or("only http:// addresses are read")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let work = async {
        let mut tcp = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| e.to_string())?;
        tcp.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        tcp.take(16 << 20)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or("the answer is not HTTP")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(head.lines().next().unwrap_or("").to_owned());
        }
        Ok(body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), work)
        .await
        .map_err(|_| "no answer within 2 s".to_owned())?
}

/// `GET /console/connectors`.
pub async fn page_handler(State(console): State<Console>) -> Response {
    let mut table = Table::new();
    let mut problems = String::new();
    for address in &console.0.connectors {
        match fetch(address).await {
            Ok(text) => parse(&text, &mut table),
            Err(e) => {
                let _ = write!(
                    problems,
                    r#"<p class="error">{}: {}</p>"#,
                    esc(address),
                    esc(&e)
                );
            }
        }
    }
    let head: String = SHOWN.iter().map(|(_, h)| format!("<th>{h}</th>")).collect();
    let rows: String = table
        .iter()
        .map(|((sink, stream), values)| {
            let cells: String = SHOWN
                .iter()
                .map(|(k, _)| {
                    let v = values.get(k).copied().unwrap_or(0.0);
                    let class = if (*k == "dead_letters_total" || *k == "stream_stopped") && v > 0.0
                    {
                        " alert"
                    } else {
                        ""
                    };
                    format!(r#"<td class="num{class}">{v}</td>"#)
                })
                .collect();
            format!(
                "<tr><td><code>{}</code></td><td><code>{}</code></td>{cells}</tr>",
                esc(sink),
                esc(stream)
            )
        })
        .collect();
    let body = if console.0.connectors.is_empty() {
        r#"<h1>Connectors</h1><p class="empty">No connectors are known to this aggregator. Run them with <code>sluice up --connect FILE</code>, or list their metrics addresses in the aggregator's <code>console.connectors</code>.</p>"#.to_owned()
    } else {
        format!(
            r#"<h1>Connectors</h1>{problems}
<table class="connectors" id="connectors"><thead><tr><th>sink</th><th>stream</th>{head}</tr></thead><tbody>{rows}</tbody></table>
<p class="muted">Dead letters are in each sink's dead-letter table or folder, with the reason. This page refreshes every 5 s.</p>
<script>setTimeout(() => location.reload(), 5000)</script>"#
        )
    };
    page("Connectors", "connectors", &body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_metrics_are_read_by_sink_and_stream() {
        let text = "# HELP x\nsluice_connect_rows_written_total{sink=\"pg\",stream=\"s\"} 12\nsluice_connect_lag_records{sink=\"pg\",stream=\"s\"} 3\nsluice_connect_dead_letters_total{sink=\"pg\",stream=\"s\"} 1\nsluice_connect_other{sink=\"pg\",stream=\"s\"} 9\nprocess_cpu 1\n";
        let mut t = Table::new();
        parse(text, &mut t);
        let row = &t[&("pg".to_owned(), "s".to_owned())];
        assert_eq!(row["rows_written_total"], 12.0);
        assert_eq!(row["lag_records"], 3.0);
        assert_eq!(row["dead_letters_total"], 1.0);
        assert_eq!(row.len(), 3);
    }
}
