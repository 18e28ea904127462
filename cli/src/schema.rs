//! `sluice schema …`: jsonschema-tools' work on schema repositories.
//!
//! Exit codes, the same for every subcommand: 0 when all is well, 1 when a
//! check found something (a lint finding, an incompatible change, a failing
//! example, a materialized file that differs), 2 when the command could not
//! run (unreadable repository, bad arguments, a file it could not write).

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sluice_shared::tooling::{
    self, CompatBreak, Finding, LintReport, Listing, Materializer, compare_versions, id_version,
};
use sluice_shared::{
    RepositoryError, SchemaRegistry, SchemaRepository, Version, Violations, check_examples, fs,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Schema repository commands.
#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Compile every materialized version and validate every example in it.
    Examples {
        /// A schema repository folder (holding `jsonschema/`); repeat for
        /// several, in resolution order.
        #[arg(long = "repo", required = true)]
        repos: Vec<PathBuf>,
    },
    /// Write `<version>.yaml` (and `.json`) with links from `current.yaml`:
    /// `$ref`s dereferenced, `allOf` merged, numeric bounds added.
    Materialize(MaterializeArgs),
    /// Check repositories against the structure and robustness rules.
    Lint(CheckArgs),
    /// Check that consecutive versions within a major are compatible.
    Compat(CheckArgs),
    /// Lint and compat together, for CI and pre-commit hooks.
    Check(CheckArgs),
    /// Start a new schema: `current.yaml` and its first version, 1.0.0.
    New(NewArgs),
    /// Cut a new version from an edited `current.yaml`.
    Bump(BumpArgs),
    /// Write the bundle (stream config and schema files, checked to load)
    /// that an edge embeds and an aggregator serves at /v1/bundle.
    Bundle(BundleArgs),
}

/// Output for people or for programs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

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

/// `sluice schema new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// The new schema's directory, e.g. `schemas/jsonschema/shop/checkout/step`.
    path: PathBuf,
    /// What one event of this schema records.
    #[arg(long, default_value = "TODO: what one event of this schema records.")]
    description: String,
    /// The fragment the schema builds on (default: the latest
    /// `/fragment/common` in the repositories, if any).
    #[arg(long)]
    fragment: Option<String>,
    /// Further repositories for `$ref`s (a primary, for a secondary's schema).
    #[arg(long = "repo")]
    repos: Vec<PathBuf>,
}

/// Which part of the version a bump raises.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Part {
    /// A breaking change: a new major, no compatibility check.
    Major,
    /// An additive change (the usual one): checked for compatibility.
    #[default]
    Minor,
    /// A fix that changes no field: checked for compatibility.
    Patch,
}

/// `sluice schema bump`.
#[derive(Args, Debug)]
pub struct BumpArgs {
    /// The edited `current.yaml` (or its directory).
    path: PathBuf,
    /// Which part of the version to raise.
    #[arg(long, value_enum, default_value_t)]
    part: Part,
    /// Further repositories for `$ref`s (a primary, for a secondary's schema).
    #[arg(long = "repo")]
    repos: Vec<PathBuf>,
}

/// `sluice schema bundle`.
#[derive(Args, Debug)]
pub struct BundleArgs {
    /// A schema repository folder; repeat for several, in resolution order.
    #[arg(long = "repo", default_value = "schemas")]
    repos: Vec<PathBuf>,
    /// The stream config.
    #[arg(long, default_value = "schemas/streams.yaml")]
    streams: PathBuf,
    /// Where to write the bundle (JSON).
    #[arg(short, long)]
    output: PathBuf,
}

/// Runs a schema command.
pub fn run(cmd: SchemaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemaCommand::Examples { repos } => examples(&repos),
        SchemaCommand::Materialize(args) => materialize(args),
        SchemaCommand::Lint(args) => check(&args, true, false),
        SchemaCommand::Compat(args) => check(&args, false, true),
        SchemaCommand::Check(args) => check(&args, true, true),
        SchemaCommand::New(args) => new(args),
        SchemaCommand::Bump(args) => bump(args),
        SchemaCommand::Bundle(args) => bundle(args),
    }
}

/// Loads repository folders in order.
pub fn load_repos(
    dirs: &[PathBuf],
) -> anyhow::Result<(Vec<SchemaRepository>, Vec<RepositoryError>)> {
    let mut repos = Vec::new();
    let mut errors = Vec::new();
    for dir in dirs {
        let (repo, errs) = fs::load_dir(dir)
            .with_context(|| format!("cannot read schema repository {}", dir.display()))?;
        repos.push(repo);
        errors.extend(errs);
    }
    Ok((repos, errors))
}

fn examples(dirs: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let (repos, read_errors) = load_repos(dirs)?;
    let (_, report) = check_examples(&repos, &read_errors);
    for f in &report.failures {
        match f.example {
            Some(i) => println!("FAIL {} example {}: {}", f.file, i, f.errors),
            None => println!("FAIL {}: {}", f.file, f.errors),
        }
    }
    println!("{}", report.summary());
    Ok(verdict(report.failures.is_empty()))
}

fn verdict(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Repositories loaded with the folders they came from.
struct Loaded {
    roots: Vec<PathBuf>,
    repos: Vec<SchemaRepository>,
}

impl Loaded {
    fn load(dirs: &[PathBuf]) -> anyhow::Result<Loaded> {
        let (repos, errors) = load_repos(dirs)?;
        if let Some(e) = errors.first() {
            bail!("{e}");
        }
        Ok(Loaded {
            roots: dirs.to_vec(),
            repos,
        })
    }

    /// The repository at `index` first, then the others in order.
    fn order(&self, index: usize) -> Vec<SchemaRepository> {
        let mut out = vec![self.repos[index].clone()];
        out.extend(
            self.repos
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .map(|(_, r)| r.clone()),
        );
        out
    }

    fn schema_dir(&self, index: usize, title: &str) -> PathBuf {
        self.roots[index]
            .join(&self.repos[index].base_path)
            .join(title)
    }
}

/// Reads the files of every schema directory: regular files, and links
/// with their targets. A small file whose whole text names a sibling file
/// counts as a link to it (how links look once copied without link support).
fn listing(root: &Path, repo: &SchemaRepository) -> Listing {
    let base = root.join(&repo.base_path);
    let mut out = Listing::default();
    let titles: Vec<&String> = repo.versions.keys().chain(repo.current.keys()).collect();
    for title in titles {
        let dir = base.join(title);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let names: Vec<(String, PathBuf)> = entries
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        let mut files = BTreeMap::new();
        for (name, path) in &names {
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                continue;
            };
            let target = if meta.file_type().is_symlink() {
                std::fs::read_link(path)
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned())
            } else if meta.is_file() && meta.len() <= 64 {
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_owned())
                    .filter(|t| names.iter().any(|(n, _)| n == t) && t != name)
            } else {
                None
            };
            files.insert(name.clone(), target);
        }
        out.dirs.insert(title.clone(), files);
    }
    out
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

const COMPAT_CASE: &str = "schema-version-compatibility";
const COMPAT_HINT: &str = "within a major version only add optional properties or enum values; \
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

fn check(args: &CheckArgs, do_lint: bool, do_compat: bool) -> anyhow::Result<ExitCode> {
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

/// Finds the repository folder a path is in: the nearest ancestor holding
/// `.jsonschema-tools.yaml`.
fn repo_root_of(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    abs.ancestors()
        .find(|a| a.join(".jsonschema-tools.yaml").is_file())
        .map(Path::to_path_buf)
}

/// The `current.yaml` a path names (itself, or inside the folder).
fn current_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("current.yaml")
    } else {
        path.to_path_buf()
    }
}

/// Loads the repository holding `path` first, then `extra` repositories.
fn load_for(path: &Path, extra: &[PathBuf]) -> anyhow::Result<(Loaded, String)> {
    let root = repo_root_of(path).with_context(|| {
        format!(
            "{} is not inside a schema repository (no .jsonschema-tools.yaml above it)",
            path.display()
        )
    })?;
    let mut dirs = vec![root.clone()];
    for e in extra {
        let e = std::path::absolute(e)?;
        if e != root {
            dirs.push(e);
        }
    }
    let loaded = Loaded::load(&dirs)?;
    let base = root.join(&loaded.repos[0].base_path);
    let abs = std::path::absolute(path)?;
    let dir = if abs.extension().is_some() {
        abs.parent().map(Path::to_path_buf).unwrap_or(abs)
    } else {
        abs
    };
    let title = dir
        .strip_prefix(&base)
        .with_context(|| format!("{} is not under {}", dir.display(), base.display()))?
        .to_string_lossy()
        .replace('\\', "/");
    if title.is_empty() {
        bail!(
            "{} is the schema base folder, not a schema's folder",
            dir.display()
        );
    }
    Ok((loaded, title))
}

/// Writes `text` to `path` through a temporary file and a rename.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("sluice-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Points `link` (a file name in `dir`) at `target` (a file name in `dir`).
fn write_link(dir: &Path, link: &str, target: &str) -> anyhow::Result<()> {
    let path = dir.join(link);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => std::fs::remove_file(&path)
            .with_context(|| format!("cannot replace {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    #[cfg(unix)]
    let made = std::os::unix::fs::symlink(target, &path);
    #[cfg(not(unix))]
    let made = std::fs::copy(dir.join(target), &path).map(|_| ());
    made.with_context(|| format!("cannot link {} to {target}", path.display()))
}

/// Writes a materialized version and its links; returns the files written.
fn write_version(
    dir: &Path,
    repo: &SchemaRepository,
    version: Version,
    schema: &Value,
) -> anyhow::Result<Vec<PathBuf>> {
    let tools = &repo.tools;
    let mut written = Vec::new();
    for ty in &tools.content_types {
        let path = dir.join(format!("{version}.{ty}"));
        let text = if ty == "json" {
            tooling::to_json(schema)
        } else {
            tooling::to_yaml(schema)
        };
        write_file(&path, &text)?;
        written.push(path);
    }
    let Some(first) = tools.content_types.first() else {
        return Ok(written);
    };
    if tools.link_extensionless {
        write_link(dir, &version.to_string(), &format!("{version}.{first}"))?;
        written.push(dir.join(version.to_string()));
    }
    if tools.link_latest {
        let title_versions = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(&format!(".{first}"))
                    .and_then(Version::parse)
            })
            .max()
            .unwrap_or(version);
        let latest = title_versions.max(version);
        for ty in &tools.content_types {
            write_link(dir, &format!("latest.{ty}"), &format!("{latest}.{ty}"))?;
            written.push(dir.join(format!("latest.{ty}")));
        }
        if tools.link_extensionless {
            write_link(dir, "latest", &format!("{latest}.{first}"))?;
            written.push(dir.join("latest"));
        }
    }
    Ok(written)
}

fn materialize(args: MaterializeArgs) -> anyhow::Result<ExitCode> {
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

fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.path)
        .with_context(|| format!("cannot create {}", args.path.display()))?;
    let (loaded, title) = load_for(&args.path, &args.repos)?;
    let dir = loaded.schema_dir(0, &title);
    let current_path = dir.join("current.yaml");
    if current_path.exists() || loaded.repos[0].versions.contains_key(&title) {
        bail!("{title} already exists; edit its current.yaml and run `sluice schema bump`");
    }
    let fragment = args.fragment.clone().or_else(|| {
        loaded
            .repos
            .iter()
            .filter_map(|r| r.versions.get("fragment/common"))
            .filter_map(|v| v.keys().next_back().copied())
            .max()
            .map(|v| format!("/fragment/common/{v}#"))
    });
    let stream = title.replace('/', ".");
    let mut text = format!(
        "title: {title}\ndescription: {}\n$id: /{title}/1.0.0\n$schema: https://json-schema.org/draft-07/schema#\ntype: object\n",
        serde_json::to_string(&args.description)?
    );
    match &fragment {
        Some(f) => text.push_str(&format!(
            "allOf:\n  - $ref: {f}\n  - properties:\n      # Add this schema's own fields here, snake_case, each with a type and a description.\n      action:\n        description: What the user did.\n        type: string\n        maxLength: 128\n"
        )),
        None => text.push_str(
            "required:\n  - $schema\n  - meta\nproperties:\n  $schema:\n    description: The URI of this event's schema.\n    type: string\n  meta:\n    type: object\n    required: [dt, stream]\n    properties:\n      dt:\n        type: string\n        format: date-time\n        maxLength: 128\n      stream:\n        type: string\n        minLength: 1\n  action:\n    description: What the user did.\n    type: string\n    maxLength: 128\n",
        ),
    }
    // The example: one instance of the materialized schema, with this stream's name.
    let repos = loaded.order(0);
    let materializer = Materializer::new(repos.iter());
    let parse = |text: &str| {
        sluice_shared::parse_document(text.as_bytes(), "yaml")
            .map_err(|e| anyhow::anyhow!("the new current.yaml does not parse: {e}"))
    };
    let draft = materializer
        .materialize(&parse(&text)?, &repos[0].tools)
        .map_err(|e| anyhow::anyhow!("{title}: {e}"))?;
    let mut sample = tooling::example(&draft.schema).unwrap_or_else(|| json!({}));
    if let Some(obj) = sample.as_object_mut() {
        obj.insert("$schema".into(), json!({"$ref": "#/$id"}));
        if let Some(meta) = obj.get_mut("meta").and_then(Value::as_object_mut) {
            meta.insert("stream".into(), json!(stream));
        }
    }
    text.push_str("examples:\n");
    for line in tooling::to_yaml(&json!([sample])).lines() {
        text.push_str(&format!("  {line}\n"));
    }
    let document = parse(&text)?;
    let m = materializer
        .materialize(&document, &repos[0].tools)
        .map_err(|e| anyhow::anyhow!("{title}: {e}"))?;
    write_file(&current_path, &text)?;
    let files = write_version(&dir, &repos[0], m.version, &m.schema)?;
    println!(
        "created {} and /{title}/1.0.0 ({} files)",
        current_path.display(),
        files.len()
    );
    println!(
        "edit current.yaml, then run `sluice schema bump {}`",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn bump(args: BumpArgs) -> anyhow::Result<ExitCode> {
    let current_path = current_file(&args.path);
    let (loaded, title) = load_for(&current_path, &args.repos)?;
    let repos = loaded.order(0);
    let repo = &repos[0];
    let current = repo
        .current
        .get(&title)
        .with_context(|| format!("{} is not a readable current.yaml", current_path.display()))?;
    let text = std::fs::read_to_string(&current_path)
        .with_context(|| format!("cannot read {}", current_path.display()))?;
    let current_version = id_version(&current.document)
        .with_context(|| format!("{}: $id has no version", current_path.display()))?;
    let latest = repo.versions.get(&title).and_then(|v| v.iter().next_back());
    let materializer = Materializer::new(repos.iter());
    let (next, text) = match latest {
        Some((&latest_version, latest_file)) if current_version <= latest_version => {
            let as_is = materializer
                .materialize(&current.document, &repo.tools)
                .map_err(|e| anyhow::anyhow!("{title}: {e}"))?;
            let skip = as_is.generated_example || current.document.get("examples").is_none();
            if current_version == latest_version
                && tooling::same_schema(&as_is.schema, &latest_file.document, skip)
            {
                println!("/{title}/{latest_version} is up to date; edit current.yaml first");
                return Ok(ExitCode::SUCCESS);
            }
            let next = match args.part {
                Part::Major => Version {
                    major: latest_version.major + 1,
                    minor: 0,
                    patch: 0,
                },
                Part::Minor => Version {
                    minor: latest_version.minor + 1,
                    patch: 0,
                    ..latest_version
                },
                Part::Patch => Version {
                    patch: latest_version.patch + 1,
                    ..latest_version
                },
            };
            let old_id = format!("/{title}/{current_version}");
            if !text.contains(&old_id) {
                bail!(
                    "{}: cannot find `{old_id}` to raise; set $id to /{title}/{next} by hand",
                    current_path.display()
                );
            }
            (next, text.replacen(&old_id, &format!("/{title}/{next}"), 1))
        }
        // Raised by hand already, or never materialized.
        _ => (current_version, text),
    };
    let document = sluice_shared::parse_document(text.as_bytes(), "yaml")
        .map_err(|e| anyhow::anyhow!("{}: {e}", current_path.display()))?;
    let m = materializer
        .materialize(&document, &repo.tools)
        .map_err(|e| anyhow::anyhow!("{title}: {e}"))?;
    if let Some((latest_version, latest_file)) = latest
        && latest_version.major == next.major
    {
        let breaks = compare_versions(&m.schema, &latest_file.document);
        if !breaks.is_empty() {
            for b in &breaks {
                println!(
                    "{}: {COMPAT_CASE}: {} at {} (against {})",
                    current_path.display(),
                    b.message,
                    b.path,
                    latest_file.path
                );
            }
            println!("    fix: {COMPAT_HINT}");
            println!("nothing written: /{title}/{next} would break /{title}/{latest_version}");
            return Ok(ExitCode::FAILURE);
        }
    }
    // The new version's examples must validate, or nothing is written.
    let compiled = SchemaRegistry::compile_standalone(&repos, &title, m.version, &m.schema)
        .map_err(|e| anyhow::anyhow!("/{title}/{}: {e}", m.version));
    let compiled = match compiled {
        Ok(c) => c,
        Err(e) => {
            println!("{}: schema-is-valid: {e}", current_path.display());
            println!("nothing written");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut bad = 0;
    for (i, example) in m
        .schema
        .get("examples")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Err(v) = compiled.validate(example) {
            bad += 1;
            println!(
                "{}: schema-examples-are-valid: example {i} does not validate: {}",
                current_path.display(),
                Violations::errors_text(&v)
            );
        }
    }
    if bad > 0 {
        println!("    fix: {}", tooling::Rule::ExamplesAreValid.hint());
        println!("nothing written");
        return Ok(ExitCode::FAILURE);
    }
    write_file(&current_path, &text)?;
    let dir = loaded.schema_dir(0, &title);
    let files = write_version(&dir, repo, m.version, &m.schema)?;
    println!(
        "materialized /{title}/{} ({} files)",
        m.version,
        files.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn bundle(args: BundleArgs) -> anyhow::Result<ExitCode> {
    let streams = std::fs::read_to_string(&args.streams)
        .with_context(|| format!("cannot read {}", args.streams.display()))?;
    let bundle = fs::read_bundle(&args.repos, streams).context("cannot read the repositories")?;
    let registry = match bundle.load() {
        Ok((registry, _)) => registry,
        Err(e) => {
            println!("FAIL {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    write_file(&args.output, &serde_json::to_string(&bundle)?)?;
    println!(
        "wrote {}: {} schema versions from {} repositories",
        args.output.display(),
        registry.len(),
        bundle.repositories.len()
    );
    Ok(ExitCode::SUCCESS)
}
