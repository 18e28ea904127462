//! `sluice schema …`: jsonschema-tools' work on schema repositories.
//!
//! Exit codes, the same for every subcommand: 0 when all is well, 1 when a
//! check found something (a lint finding, an incompatible change, a failing
//! example, a materialized file that differs), 2 when the command could not
//! run (unreadable repository, bad arguments, a file it could not write).
//!
//! A file per subcommand; this one holds the command line and what they share
//! (loading repositories, listing their files, the exit code).

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

mod bump;
mod bundle;
mod check;
mod examples;
mod files;
mod materialize;
mod new;

pub use bump::BumpArgs;
pub use bundle::BundleArgs;
pub use check::CheckArgs;
pub use materialize::MaterializeArgs;
pub use new::NewArgs;

use check::{COMPAT_CASE, COMPAT_HINT};
use files::{current_file, load_for, write_file, write_version};

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

/// Runs a schema command.
pub fn run(cmd: SchemaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemaCommand::Examples { repos } => examples::run(&repos),
        SchemaCommand::Materialize(args) => materialize::run(args),
        SchemaCommand::Lint(args) => check::run(&args, true, false),
        SchemaCommand::Compat(args) => check::run(&args, false, true),
        SchemaCommand::Check(args) => check::run(&args, true, true),
        SchemaCommand::New(args) => new::run(args),
        SchemaCommand::Bump(args) => bump::run(args),
        SchemaCommand::Bundle(args) => bundle::run(args),
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
