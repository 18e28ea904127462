//! `sluice schema bundle`: the stream config and every schema file, checked
//! to load together, as the one document edges embed.

use super::*;

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

pub(super) fn run(args: BundleArgs) -> anyhow::Result<ExitCode> {
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
