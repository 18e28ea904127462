//! `sluice schema …`: checks over schema repositories.

use anyhow::Context;
use clap::Subcommand;
use sluice_shared::{RepositoryError, SchemaRepository, check_examples, fs};
use std::path::PathBuf;
use std::process::ExitCode;

/// Schema repository commands.
#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Compile every materialized version and validate every example in it.
    ///
    /// Exits 0 when all pass, 1 when any fails, 2 when a repository cannot be read.
    Examples {
        /// A schema repository folder (holding `jsonschema/`); repeat for
        /// several, in resolution order.
        #[arg(long = "repo", required = true)]
        repos: Vec<PathBuf>,
    },
}

/// Runs a schema command.
pub fn run(cmd: SchemaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemaCommand::Examples { repos } => examples(&repos),
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
    Ok(if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
