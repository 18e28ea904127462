//! Runs the intake bench's product-metrics event through `Intake::process` again and
//! again, for profilers that count instructions rather than time:
//!
//! ```text
//! cargo build --release -p sluice-shared --example intake_loop
//! valgrind --tool=callgrind --toggle-collect='*intake_loop*run_bodies*' \
//!     target/release/examples/intake_loop 2000 [x50]
//! ```
//!
//! The argument is how many bodies; `x50` sends 50 events to a body, as clients do.
//! Instructions per event are the collected total over the number of events. Throughput
//! belongs to `cargo bench -p sluice-shared --bench intake`, which measures it properly.

#[path = "../benches/fixtures/mod.rs"]
mod fixtures;

use fixtures::{PM_WEB, intake, request};
use sluice_shared::{EventIds, Intake};
use std::hint::black_box;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let bodies: usize = match args.next().map(|a| a.parse()) {
        None => 10_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("intake_loop: the number of bodies is not a number: {e}");
            std::process::exit(2);
        }
    };
    let per_body = if args.next().as_deref() == Some("x50") {
        50
    } else {
        1
    };
    let body = format!("[{}]", vec![PM_WEB; per_body].join(","));
    let body = if per_body == 1 { PM_WEB } else { body.as_str() };
    let accepted = run_bodies(&intake(), body, bodies);
    println!(
        "{} events in {bodies} bodies, {accepted} accepted",
        bodies * per_body
    );
}

/// The part a profiler counts: `bodies` times `body` through intake; how many events it took.
#[inline(never)]
fn run_bodies(intake: &Intake, body: &str, bodies: usize) -> usize {
    let req = request();
    let mut ids = EventIds::with_seed(1);
    let mut accepted = 0;
    for _ in 0..bodies {
        if let Ok(out) = intake.process(&req, black_box(body.as_bytes()), &mut ids) {
            accepted += out.iter().filter(|o| o.event.is_some()).count();
        }
    }
    accepted
}
