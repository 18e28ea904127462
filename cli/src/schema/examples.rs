//! `sluice schema examples`: every version compiled and every example validated.

use super::*;

pub(super) fn run(dirs: &[PathBuf]) -> anyhow::Result<ExitCode> {
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
