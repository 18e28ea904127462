//! `sluice bench-dedupe`: the aggregator's dedupe window at full speed. It
//! feeds N distinct ids (and, every `--repeat-every` ids, a repeat of an
//! earlier one, from anywhere in the window) through the window the
//! aggregator runs, with its slices saved in a scratch folder, as fast as
//! one thread can; admission times are spread evenly over the window, as a
//! steady stream fills it, so at the end the window holds all N. It prints
//! ids/s, the process's resident memory per held id (now and at its peak,
//! over what it held before), the filters' false-positive rate, and whether
//! every repeat was found and every new id taken as new. Then it reopens
//! the window from its folder, as a restarted aggregator does, rebuilds the
//! slice not yet saved (the ids a restart reads from the log) and times it.

use crate::bench_connect::bar;
use anyhow::{Context, bail};
use clap::Args;
use sluice_aggregator::{DedupeWindow, WindowOptions};
use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Instant;

/// Options of `sluice bench-dedupe`.
#[derive(Args, Debug)]
pub struct BenchDedupeArgs {
    /// Distinct ids to feed.
    #[arg(long, default_value_t = 100_000_000)]
    ids: u64,
    /// The window, in seconds (the ids' admission times span all of it).
    #[arg(long, default_value_t = 3600)]
    window_secs: u64,
    /// Feed a repeat of an earlier id after every this many ids.
    #[arg(long, default_value_t = 1000)]
    repeat_every: u64,
    /// Where the window saves its slices (a scratch folder by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const T0_MS: i64 = 1_796_083_200_000;

/// Id `i`: distinct for every `i`, spread like random UUIDs.
fn id(i: u64) -> u128 {
    let mut x = u128::from(i).wrapping_add(0x5851_F42D_4C95_7F2D);
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    x ^= x >> 67;
    x.wrapping_mul(0xD6E8_FEB8_6659_FD93_3B5A_D5B0_2BF5_7D11) | 1
}

fn rss() -> (u64, u64) {
    sluice_host::process::usage(std::process::id())
        .map_or((0, 0), |u| (u.resident_bytes, u.peak_resident_bytes))
}

/// Runs the benchmark.
pub fn run(args: BenchDedupeArgs) -> anyhow::Result<ExitCode> {
    let scratch = tempfile::tempdir().context("cannot make a scratch folder")?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("dedupe-slices"));
    let window_ms = i64::try_from(args.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let options = WindowOptions {
        window_ms,
        dir: Some(dir.clone()),
        ..WindowOptions::default()
    };
    let n = args.ids.max(1);
    let at = |i: u64| T0_MS + i128_to_i64(i128::from(i) * i128::from(window_ms) / i128::from(n));
    let (base_rss, _) = rss();
    let mut window = DedupeWindow::open(options.clone(), T0_MS)?;
    let pending: HashSet<u128> = HashSet::new();
    let progress = bar(n, "ids into the window");
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut repeats, mut repeats_found, mut new_taken_as_seen) = (0u64, 0u64, 0u64);
    let mut peak_rss = 0u64;
    let mut last_second = T0_MS / 1000;
    let started = Instant::now();
    for i in 0..n {
        let now = at(i);
        if window.contains(id(i)) {
            new_taken_as_seen += 1;
        } else {
            window.insert_new(id(i), now);
        }
        if args.repeat_every > 0 && i > 0 && i % args.repeat_every == 0 {
            repeats += 1;
            repeats_found += u64::from(window.contains(id(rng.u64(..i))));
        }
        if now / 1000 != last_second {
            last_second = now / 1000;
            window.maintain(now, &pending);
        }
        if i % 1_000_000 == 0 {
            progress.set_position(i);
            peak_rss = peak_rss.max(rss().0);
        }
    }
    let fed = started.elapsed();
    progress.finish_and_clear();
    window.flush(at(n));
    let (end_rss, hwm) = rss();
    peak_rss = peak_rss.max(end_rss);
    let held = window.len() as u64;
    let stats = window.stats();
    let lookups_of_new = n + repeats - repeats_found;
    let per_id = |bytes: u64| bytes.saturating_sub(base_rss) as f64 / held.max(1) as f64;
    println!(
        "fed {n} ids and {repeats} repeats in {:.1} s: {:.0} ids/s (one thread; slices written by another)",
        fed.as_secs_f64(),
        (n + repeats) as f64 / fed.as_secs_f64()
    );
    println!(
        "held {held} ids in {} runs on disk + {} slices in memory; window's own memory {:.2} bytes/id",
        window.runs(),
        window.unsaved_slices(),
        window.memory_bytes() as f64 / held.max(1) as f64
    );
    println!(
        "process RSS over its start: {:.2} bytes/id at the end, {:.2} bytes/id at the highest sample ({} MiB peak RSS, {} MiB high-water mark)",
        per_id(end_rss),
        per_id(peak_rss),
        peak_rss >> 20,
        hwm >> 20
    );
    println!(
        "filter false positives: {} of {} lookups of ids not held ({:.3}%); disk lookups {} ({:.0}/s)",
        stats.false_positives,
        lookups_of_new,
        100.0 * stats.false_positives as f64 / lookups_of_new.max(1) as f64,
        stats.disk_lookups,
        stats.disk_lookups as f64 / fed.as_secs_f64()
    );
    println!(
        "exact: {repeats_found} of {repeats} repeats found, {new_taken_as_seen} new ids taken as seen"
    );
    drop(window);
    // A restart: open the saved runs, then rebuild what they do not cover from the log.
    let restarted = Instant::now();
    let mut window = DedupeWindow::open(options, at(n))?;
    let opened = restarted.elapsed();
    let since = window.covered_until_ms().unwrap_or(T0_MS);
    let first = first_at_or_after(n, since, at);
    for i in first..n {
        window.remember(id(i), at(i));
    }
    let serving = restarted.elapsed();
    let sample = 100_000u64.min(n);
    let found = (0..sample)
        .map(|k| k * (n / sample))
        .filter(|&i| window.contains(id(i)))
        .count();
    println!(
        "restart: runs opened in {:.2} s, {} ids since the newest run read again, serving after {:.2} s; {found} of {sample} sampled ids found",
        opened.as_secs_f64(),
        n - first,
        serving.as_secs_f64()
    );
    if repeats_found != repeats || new_taken_as_seen != 0 || found as u64 != sample {
        bail!("the window was not exact");
    }
    Ok(ExitCode::SUCCESS)
}

fn i128_to_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The first of `0..n` whose admission time (`at`, rising) is at or after `since_ms`.
fn first_at_or_after(n: u64, since_ms: i64, at: impl Fn(u64) -> i64) -> u64 {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if at(mid) < since_ms {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}
