//! `sluice schema bump`: a new version from an edited `current.yaml`, refused
//! when it breaks the version before it.

use super::*;

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

pub(super) fn run(args: BumpArgs) -> anyhow::Result<ExitCode> {
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
