//! Schema pages: every repository, title and version; one version as a
//! table of fields with its YAML and JSON a click away; two versions side by
//! side with the compatibility check's verdict; search by title or field.

use super::html::{esc, page, url};
use super::{Console, query};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sluice_shared::tooling::{Change, Field, compare_versions, diff_fields, fields};
use sluice_shared::{SchemaFile, Version};
use std::fmt::Write;

/// `GET /console/schemas?q=…`.
pub async fn index(State(console): State<Console>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw.as_deref());
    let needle = q
        .get("q")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_default();
    let catalog = console.0.catalog.get();
    let mut body = format!(
        r#"<h1>Schemas</h1>
<form class="search" method="get" action="/console/schemas">
<input type="search" name="q" id="q" value="{}" placeholder="a title or a field name">
<button type="submit">Search</button></form>"#,
        esc(&needle)
    );
    let mut found = 0;
    for repo in &catalog.repos {
        let mut rows = String::new();
        for (title, versions) in &repo.versions {
            let Some((latest, file)) = versions.iter().next_back() else {
                continue;
            };
            let matched: Vec<Field> = if needle.is_empty() || title.to_lowercase().contains(&needle)
            {
                Vec::new()
            } else {
                let hits: Vec<Field> = fields(&file.document)
                    .into_iter()
                    .filter(|f| f.path.to_lowercase().contains(&needle))
                    .collect();
                if hits.is_empty() {
                    continue;
                }
                hits
            };
            found += 1;
            let links: String = versions
                .keys()
                .rev()
                .map(|v| {
                    format!(
                        r#"<a href="/console/schema?repo={}&title={}&version={v}">{v}</a>"#,
                        url(&repo.name),
                        url(title)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            let description = file
                .document
                .get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("");
            let hits: String = matched
                .iter()
                .map(|f| format!("<code>{}</code>", esc(&f.path)))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = write!(
                rows,
                r#"<tr><td><a class="title" href="/console/schema?repo={r}&title={t}&version={latest}">{title}</a></td><td>{links}</td><td>{d}{hits}</td></tr>"#,
                r = url(&repo.name),
                t = url(title),
                title = esc(title),
                d = esc(description),
                hits = if hits.is_empty() {
                    String::new()
                } else {
                    format!(r#"<div class="hits">fields: {hits}</div>"#)
                },
            );
        }
        if !rows.is_empty() {
            let _ = write!(
                body,
                r#"<h2>Repository <code>{}</code></h2>
<table class="schemas"><thead><tr><th>title</th><th>versions</th><th>description</th></tr></thead><tbody>{rows}</tbody></table>"#,
                esc(&repo.name)
            );
        }
    }
    if found == 0 {
        let _ = write!(
            body,
            r#"<p class="empty">No schema's title or fields match “{}”.</p>"#,
            esc(&needle)
        );
    }
    page("Schemas", "schemas", &body).into_response()
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            "schemas",
            &format!(r#"<h1>Not found</h1><p class="error">{}</p>"#, esc(what)),
        ),
    )
        .into_response()
}

/// The repository path of `file` with its extension swapped for `ext`.
fn file_link(repo: &str, file: &SchemaFile, ext: &str) -> String {
    let stem = file.path.rsplit_once('.').map_or(&*file.path, |(s, _)| s);
    format!("/repositories/{}/{}.{ext}", url(repo), esc(stem))
}

fn field_row(f: &Field) -> String {
    let depth = f.path.matches(['.', '[']).count();
    format!(
        r#"<tr><td class="path" style="padding-left:{pad}em"><code>{path}</code></td><td>{kind}</td><td>{format}</td><td>{req}</td><td>{desc}{allowed}</td><td>{ex}</td></tr>"#,
        pad = 0.5 + depth as f64,
        path = esc(&f.path),
        kind = esc(&f.kind),
        format = esc(f.format.as_deref().unwrap_or("")),
        req = if f.required { "required" } else { "" },
        desc = esc(f.description.as_deref().unwrap_or("")),
        allowed = f.allowed.as_deref().map_or(String::new(), |a| format!(
            r#"<div class="allowed">one of <code>{}</code></div>"#,
            esc(a)
        )),
        ex = f
            .example
            .as_deref()
            .map_or(String::new(), |e| format!("<code>{}</code>", esc(e))),
    )
}

const FIELD_HEAD: &str = "<tr><th>field</th><th>type</th><th>format</th><th>required</th><th>description</th><th>example</th></tr>";

/// `GET /console/schema?repo=…&title=…&version=…`.
pub async fn show(State(console): State<Console>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw.as_deref());
    let (repo, title, version) = (
        q.get("repo").cloned().unwrap_or_default(),
        q.get("title").cloned().unwrap_or_default(),
        q.get("version").cloned().unwrap_or_default(),
    );
    let catalog = console.0.catalog.get();
    let Some(file) = catalog.version(&repo, &title, &version) else {
        return not_found(&format!(
            "No version {version} of {title} in repository {repo}."
        ));
    };
    let versions: Vec<Version> = catalog
        .repo(&repo)
        .and_then(|r| r.versions.get(&title))
        .map(|v| v.keys().copied().collect())
        .unwrap_or_default();
    let options = |selected: &str| -> String {
        versions
            .iter()
            .rev()
            .map(|v| {
                let v = v.to_string();
                let sel = if v == selected { " selected" } else { "" };
                format!(r#"<option value="{v}"{sel}>{v}</option>"#)
            })
            .collect()
    };
    let previous = versions
        .iter()
        .rev()
        .map(ToString::to_string)
        .find(|v| *v != version && Version::parse(v) < Version::parse(&version))
        .unwrap_or_else(|| version.clone());
    let rows: String = fields(&file.document).iter().map(field_row).collect();
    let description = file
        .document
        .get("description")
        .and_then(|d| d.as_str())
        .unwrap_or("");
    let body = format!(
        r#"<h1><code>{t}</code> <span class="version">{version}</span></h1>
<p class="muted">repository <code>{r}</code> · <code>{id}</code> · <a id="yaml" href="{yaml}">YAML</a> · <a id="json" href="{json}">JSON</a></p>
<p>{description}</p>
<form class="diff" method="get" action="/console/diff">
<input type="hidden" name="repo" value="{r}"><input type="hidden" name="title" value="{t}">
Compare <select name="from">{from}</select> with <select name="to">{to}</select> <button type="submit">Diff</button>
</form>
<table class="fields" id="fields"><thead>{FIELD_HEAD}</thead><tbody>{rows}</tbody></table>"#,
        t = esc(&title),
        r = esc(&repo),
        version = esc(&version),
        id = esc(file
            .document
            .get("$id")
            .and_then(|i| i.as_str())
            .unwrap_or("")),
        yaml = file_link(&repo, file, "yaml"),
        json = file_link(&repo, file, "json"),
        description = esc(description),
        from = options(&previous),
        to = options(&version),
    );
    page(&title, "schemas", &body).into_response()
}

/// `GET /console/diff?repo=…&title=…&from=…&to=…`.
pub async fn diff(State(console): State<Console>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw.as_deref());
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let (repo, title, from, to) = (get("repo"), get("title"), get("from"), get("to"));
    let catalog = console.0.catalog.get();
    let (Some(old), Some(new)) = (
        catalog.version(&repo, &title, &from),
        catalog.version(&repo, &title, &to),
    ) else {
        return not_found(&format!(
            "{title} in repository {repo} has no version {from} or {to}."
        ));
    };
    let (vo, vn) = (Version::parse(&from), Version::parse(&to));
    let verdict = match (vo, vn) {
        (Some(a), Some(b)) if a.major != b.major => format!(
            r#"<p class="verdict neutral" id="verdict">{from} and {to} are different major versions: no compatibility is required between them.</p>"#
        ),
        _ => {
            let (older, newer) = if vo <= vn { (old, new) } else { (new, old) };
            let breaks = compare_versions(&newer.document, &older.document);
            if breaks.is_empty() {
                format!(
                    r#"<p class="verdict ok" id="verdict">Compatible: every event valid under the older version is valid under the newer one ({from} → {to}).</p>"#
                )
            } else {
                let items: String = breaks
                    .iter()
                    .map(|b| {
                        format!(
                            "<li><code>{}</code>: {}</li>",
                            esc(&b.path),
                            esc(&b.message)
                        )
                    })
                    .collect();
                format!(
                    r#"<div class="verdict bad" id="verdict"><p>Incompatible: {n} change(s) the compatibility check refuses.</p><ul>{items}</ul></div>"#,
                    n = breaks.len()
                )
            }
        }
    };
    let rows: String = diff_fields(&old.document, &new.document)
        .iter()
        .filter(|d| d.change != Change::Same || q.contains_key("all"))
        .map(|d| {
            let cell = |f: &Option<Field>| {
                f.as_ref().map_or(String::from("<td></td>"), |f| {
                    format!(
                        "<td><code>{}</code> {}{}{}</td>",
                        esc(&f.path),
                        esc(&f.kind),
                        f.format
                            .as_deref()
                            .map_or(String::new(), |x| format!(" ({})", esc(x))),
                        if f.required { " required" } else { "" }
                    )
                })
            };
            let change = serde_json::to_value(d.change)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!(
                r#"<tr class="{change}"><td>{change}</td>{}{}</tr>"#,
                cell(&d.old),
                cell(&d.new)
            )
        })
        .collect();
    let rows = if rows.is_empty() {
        r#"<tr><td colspan="3" class="empty">No field differs.</td></tr>"#.to_owned()
    } else {
        rows
    };
    let body = format!(
        r#"<h1><code>{t}</code>: {from} → {to}</h1>
<p class="muted">repository <code>{r}</code> · <a href="/console/diff?repo={ru}&title={tu}&from={from}&to={to}&all=1">show unchanged fields too</a></p>
{verdict}
<table class="diff" id="diff"><thead><tr><th>change</th><th>{from}</th><th>{to}</th></tr></thead><tbody>{rows}</tbody></table>"#,
        t = esc(&title),
        r = esc(&repo),
        ru = url(&repo),
        tu = url(&title),
        from = esc(&from),
        to = esc(&to),
    );
    page(&format!("{title} diff"), "schemas", &body).into_response()
}
