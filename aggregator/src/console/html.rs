//! The console's page frame and the escaping every page's text goes through.

use axum::response::Html;

/// `text` escaped for HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` escaped for a URL's query value.
pub fn url(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A whole page: the frame, the navigation with `active` marked, and `body`.
pub fn page(title: &str, active: &str, body: &str) -> Html<String> {
    let nav: String = [
        ("streams", "/console/", "Streams"),
        ("schemas", "/console/schemas", "Schemas"),
        ("tail", "/console/tail", "Live tail"),
        ("try", "/console/try", "Try an event"),
        ("connectors", "/console/connectors", "Connectors"),
    ]
    .iter()
    .map(|(key, href, label)| {
        let class = if *key == active {
            r#" class="active""#
        } else {
            ""
        };
        format!(r#"<a href="{href}"{class}>{label}</a>"#)
    })
    .collect();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Sluice console</title>
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script>
</head><body>
<header><a class="brand" href="/console/">Sluice</a><nav>{nav}</nav></header>
<main>
{body}
</main>
</body></html>
"#,
        title = esc(title),
    ))
}

/// A Unix-millisecond time as `2026-12-06 12:00:00 UTC`, or `never` for 0.
pub fn when(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    sluice_shared::Timestamp::from_unix_millis(ms)
        .to_rfc3339_millis()
        .replacen('T', " ", 1)
        .replace(".000Z", " UTC")
        .replace('Z', " UTC")
}

/// A JSON value shown compactly in a table cell.
pub fn json_cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => esc(s),
        other => format!("<code>{}</code>", esc(&other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_times_are_readable() {
        assert_eq!(
            esc(r#"<b a="1">'x' & y</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&#39;x&#39; &amp; y&lt;/b&gt;"
        );
        assert_eq!(url("a b&c"), "a+b%26c");
        assert_eq!(when(0), "never");
        assert_eq!(when(1_795_780_800_000), "2026-11-27 12:00:00 UTC");
        assert_eq!(when(1_795_780_800_123), "2026-11-27 12:00:00.123 UTC");
    }
}
