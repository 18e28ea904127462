//! `sluice schema materialize`: every `current.yaml` written out as its
//! version, or with `--check`, compared with what is there.

use super::*;

/// `sluice schema materialize`.
#[derive(Args, Debug)]
pub struct MaterializeArgs {
    /// Repositories to resolve `$ref`s in (the one holding each file first).
    /// Default: the repository each file is in.
    #[arg(long = "repo")]
    repos: Vec<PathBuf>,
    /// `current.yaml` files (or their directories); default every one in the
    /// first repository.
    paths: Vec<PathBuf>,
    /// Write nothing: compare with the committed version files and report
    /// how many match.
    #[arg(long)]
    check: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub(super) fn run(args: MaterializeArgs) -> anyhow::Result<ExitCode> {
    // Which current.yaml files, in which repository each.
    let mut sets: Vec<Loaded> = Vec::new();
    let mut jobs: Vec<(usize, String)> = Vec::new();
    if args.paths.is_empty() {
        if args.repos.is_empty() {
            bail!("give --repo or paths of current.yaml files");
        }
        let loaded = Loaded::load(&args.repos)?;
        jobs.extend(loaded.repos[0].current.keys().map(|t| (0, t.clone())));
        sets.push(loaded);
    } else {
        for p in &args.paths {
            let (loaded, title) = load_for(&current_file(p), &args.repos)?;
            match sets.iter().position(|s| s.roots == loaded.roots) {
                Some(i) => jobs.push((i, title)),
                None => {
                    jobs.push((sets.len(), title));
                    sets.push(loaded);
                }
            }
        }
    }
    // Shared fragments first, as jsonschema-tools orders them.
    jobs.sort_by_key(|(_, t)| (!t.contains("common"), t.matches('/').count(), t.clone()));
    let (mut matched, mut compared, mut written, mut failed) = (0usize, 0usize, 0usize, 0usize);
    let mut rows: Vec<Value> = Vec::new();
    // Each set's repositories in resolution order, made once rather than per schema.
    let ordered: Vec<Vec<SchemaRepository>> = sets.iter().map(|s| s.order(0)).collect();
    for (set, title) in &jobs {
        let loaded = &sets[*set];
        let repos = &ordered[*set];
        let repo = &repos[0];
        let Some(current) = repo.current.get(title) else {
            bail!("{title} has no current.yaml");
        };
        let materializer = Materializer::new(repos.iter());
        let m = match materializer.materialize(&current.document, &repo.tools) {
            Ok(m) => m,
            Err(e) => {
                failed += 1;
                rows.push(json!({"schema": title, "error": e.to_string()}));
                if args.format == Format::Text {
                    println!("FAIL {}: {e}", current.path);
                }
                continue;
            }
        };
        let latest = repo.versions.get(title).and_then(|v| v.iter().next_back());
        if args.check {
            let Some((latest_version, latest_file)) = latest else {
                continue;
            };
            if *latest_version != m.version {
                continue;
            }
            compared += 1;
            let skip = m.generated_example || current.document.get("examples").is_none();
            if tooling::same_schema(&m.schema, &latest_file.document, skip) {
                matched += 1;
            } else {
                let at = tooling::first_difference(&m.schema, &latest_file.document);
                rows.push(json!({"schema": title, "differs_at": at, "file": latest_file.path}));
                if args.format == Format::Text {
                    println!(
                        "DIFF {}: materializes differently from {} (first at {})",
                        current.path,
                        latest_file.path,
                        at.unwrap_or_default()
                    );
                }
            }
        } else {
            let dir = loaded.schema_dir(0, title);
            let files = write_version(&dir, repo, m.version, &m.schema)?;
            written += 1;
            if args.format == Format::Text {
                println!(
                    "materialized /{}/{} ({} files)",
                    title,
                    m.version,
                    files.len()
                );
            }
            rows.push(json!({"schema": title, "version": m.version.to_string(),
                "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>()}));
        }
    }
    let ok = failed == 0 && matched == compared;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "schemas": jobs.len(), "written": written, "compared": compared,
                "matched": matched, "failed": failed, "results": rows
            }))?
        ),
        Format::Text if args.check => println!(
            "schemas={} compared={compared} matched={matched} failed={failed}",
            jobs.len()
        ),
        Format::Text => println!("schemas={} written={written} failed={failed}", jobs.len()),
    }
    Ok(verdict(ok))
}
