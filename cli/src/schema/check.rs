//! `sluice schema lint`, `compat` and `check`: findings and incompatible
//! changes, as lines or one JSON document.

use super::*;

/// Repositories to check.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A schema repository folder; repeat for several, in `$ref` resolution
    /// order (a secondary repository after the primary it refers to).
    #[arg(long = "repo", default_value = "schemas")]
    repos: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn finding_json(repository: &str, f: &Finding) -> Value {
    json!({
        "repository": repository,
        "file": f.file,
        "rule": f.rule.name(),
        "at": f.at,
        "message": f.message,
        "hint": f.rule.hint(),
        "doc": f.rule.doc(),
        "severity": if f.warning { "warning" } else { "error" },
    })
}

fn break_json(repository: &str, file: &str, old: &str, b: &CompatBreak) -> Value {
    json!({
        "repository": repository,
        "file": file,
        "rule": COMPAT_CASE,
        "against": old,
        "at": b.path,
        "message": b.message,
        "hint": COMPAT_HINT,
        "doc": COMPAT_DOC,
    })
}

pub(super) const COMPAT_CASE: &str = "schema-version-compatibility";
pub(super) const COMPAT_HINT: &str = "within a major version only add optional properties or enum values; \
    for a breaking change start a new major version (`sluice schema bump --part major`)";
const COMPAT_DOC: &str = "docs/schema-guidelines.md#schema-version-compatibility";

/// The compatibility check over one repository: pairs compared, and breaks
/// as (file, older file, break).
type CompatResult = (usize, usize, Vec<(String, String, CompatBreak)>);

fn compat_repo(repo: &SchemaRepository) -> CompatResult {
    let (mut pairs, mut skipped, mut breaks) = (0, 0, Vec::new());
    for (title, versions) in &repo.versions {
        let list: Vec<(&Version, &sluice_shared::SchemaFile)> = versions.iter().collect();
        for w in list.windows(2) {
            let ((old_v, old), (new_v, new)) = (w[0], w[1]);
            if old_v.major != new_v.major {
                continue;
            }
            if repo.skips(title, *new_v, COMPAT_CASE) {
                skipped += 1;
                continue;
            }
            pairs += 1;
            for b in compare_versions(&new.document, &old.document) {
                breaks.push((new.path.clone(), old.path.clone(), b));
            }
        }
    }
    (pairs, skipped, breaks)
}

pub(super) fn run(args: &CheckArgs, do_lint: bool, do_compat: bool) -> anyhow::Result<ExitCode> {
    let loaded = Loaded::load(&args.repos)?;
    let mut reports: Vec<(String, LintReport)> = Vec::new();
    let mut compat: Vec<(String, CompatResult)> = Vec::new();
    for (i, repo) in loaded.repos.iter().enumerate() {
        if do_lint {
            let list = listing(&loaded.roots[i], repo);
            let repos = loaded.order(i);
            reports.push((repo.name.clone(), tooling::lint(&repos, 0, Some(&list))));
        }
        if do_compat {
            compat.push((repo.name.clone(), compat_repo(repo)));
        }
    }
    let schemas: usize = reports.iter().map(|(_, r)| r.schemas).sum();
    let findings: usize = reports
        .iter()
        .map(|(_, r)| r.findings.iter().filter(|f| !f.warning).count())
        .sum();
    let warnings: usize = reports
        .iter()
        .map(|(_, r)| r.findings.iter().filter(|f| f.warning).count())
        .sum();
    let pairs: usize = compat.iter().map(|(_, c)| c.0).sum();
    let skipped: usize = reports.iter().map(|(_, r)| r.skipped).sum::<usize>()
        + compat.iter().map(|(_, c)| c.1).sum::<usize>();
    let breaks: usize = compat.iter().map(|(_, c)| c.2.len()).sum();
    match args.format {
        Format::Json => {
            let mut items: Vec<Value> = Vec::new();
            for (name, r) in &reports {
                items.extend(r.findings.iter().map(|f| finding_json(name, f)));
            }
            for (name, (_, _, bs)) in &compat {
                items.extend(bs.iter().map(|(f, o, b)| break_json(name, f, o, b)));
            }
            let mut summary = serde_json::Map::new();
            if do_lint {
                summary.insert("schemas".into(), json!(schemas));
                summary.insert("lint_findings".into(), json!(findings));
                summary.insert("warnings".into(), json!(warnings));
            }
            if do_compat {
                summary.insert("pairs".into(), json!(pairs));
                summary.insert("compat_breaks".into(), json!(breaks));
            }
            summary.insert("skipped".into(), json!(skipped));
            summary.insert("findings".into(), Value::Array(items));
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Format::Text => {
            for (name, r) in &reports {
                for f in &r.findings {
                    let at =
                        f.at.as_deref()
                            .map(|a| format!(" at {a}"))
                            .unwrap_or_default();
                    let level = if f.warning { "warning" } else { "error" };
                    println!(
                        "{name}: {}: {level}: {}{at}: {}",
                        f.file,
                        f.rule.name(),
                        f.message
                    );
                    println!("    fix: {}", f.rule.hint());
                    println!("    see: {}", f.rule.doc());
                }
            }
            for (name, (_, _, bs)) in &compat {
                for (file, old, b) in bs {
                    println!(
                        "{name}: {file}: {COMPAT_CASE}: {} at {} (against {old})",
                        b.message, b.path
                    );
                    println!("    fix: {COMPAT_HINT}");
                    println!("    see: {COMPAT_DOC}");
                }
            }
            let mut parts = Vec::new();
            if do_lint {
                parts.push(format!(
                    "schemas={schemas} findings={findings} warnings={warnings}"
                ));
            }
            if do_compat {
                parts.push(format!("pairs={pairs} breaks={breaks}"));
            }
            parts.push(format!("skipped={skipped}"));
            println!("{}", parts.join(" "));
        }
    }
    Ok(verdict(findings == 0 && breaks == 0))
}
