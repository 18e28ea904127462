//! `sluice process --rules FILE`: runs change-propagation rules over the
//! streams of the embedded log an aggregator (or `sluice up`) writes, until
//! Ctrl-C or SIGTERM; prints each rule's counts when it stops. `--check`
//! reads the rule file and says what it holds.

use anyhow::Context;
use clap::Args;
use sluice_process::RuleSet;
use sluice_process::runner::run_log;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Options of `sluice process`.
#[derive(Args, Debug)]
pub struct ProcessArgs {
    /// The rule file (`rules: {<name>: {...}}`, change-propagation's shape).
    #[arg(long)]
    rules: PathBuf,
    /// Read the rule file, print its rules, and stop.
    #[arg(long)]
    check: bool,
    /// The data folder of `sluice up` (the log is under `aggregator/log`).
    #[arg(long, default_value = ".sluice")]
    data_dir: PathBuf,
    /// The embedded log folder, when not the one under `--data-dir`.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// The stream config that names each stream's topic.
    #[arg(long, default_value = "schemas/streams.yaml")]
    streams: PathBuf,
}

/// Runs `sluice process`.
pub fn run(args: ProcessArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.rules)
        .with_context(|| format!("cannot read the rule file {}", args.rules.display()))?;
    let rules = RuleSet::parse(&text).with_context(|| format!("{}", args.rules.display()))?;
    if args.check {
        for r in &rules.rules {
            println!(
                "{}: {} case(s) over {}",
                r.name,
                r.cases.len(),
                r.topics.join(", ")
            );
        }
        println!("rules={}", rules.rules.len());
        return Ok(ExitCode::SUCCESS);
    }
    let streams = crate::streams::load_streams(&args.streams)?;
    let log_dir = crate::tail::embedded_log(&args.data_dir, args.log_dir.as_deref())?;
    let stop = Arc::new(AtomicBool::new(false));
    let signal_stop = stop.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = runtime {
            rt.block_on(sluice_host::signals::stop());
            tracing::info!("Stopping: each rule finishes the event it holds.");
            signal_stop.store(true, Ordering::Relaxed);
        }
    });
    println!(
        "processing {} rule(s) over the embedded log at {}",
        rules.rules.len(),
        log_dir.display()
    );
    let counts = run_log(
        &rules,
        log_dir,
        |s| {
            streams
                .get(s)
                .map_or_else(|| s.to_owned(), |e| e.produce_topic(s))
        },
        stop,
    )?;
    for (name, c) in counts {
        println!(
            "{name}: matched={} executed={} retried={} failed={} duplicate={}",
            c.matched.load(Ordering::Relaxed),
            c.executed.load(Ordering::Relaxed),
            c.retried.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.duplicate.load(Ordering::Relaxed)
        );
    }
    Ok(ExitCode::SUCCESS)
}
