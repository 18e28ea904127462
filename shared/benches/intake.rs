//! Intake throughput per core: parse + validate + sample + enrich, natively.
//!
//! Run with `cargo bench -p sluice-shared --bench intake`. Criterion's `thrpt`
//! line is events per second on one core. The schemas come from the
//! Wikimedia repositories (set `SLUICE_CORPUS` to their folder).

mod fixtures;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fixtures::{PM_WEB, intake, request};
use sluice_shared::{Batch, EventIds, Intake, Tape, TapeNode, WireLimits};
use std::hint::black_box;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn analytics_test_example(intake: &Intake) -> String {
    let schema = intake
        .registry()
        .resolve("/analytics/test/2.0.0")
        .expect("analytics/test 2.0.0 is loaded");
    schema.document["examples"][0].to_string()
}

fn bench(c: &mut Criterion) {
    let intake = intake();
    let req = request();
    let mut ids = EventIds::with_seed(1);
    let analytics = analytics_test_example(&intake);
    let test_event = r#"{"$schema":"/test/event/1.0.0","meta":{"stream":"test.event","domain":"canary"},"test":"hello","test_map":{"a":"b"}}"#;

    // Every event must be accepted, or the bench measures the wrong path.
    for body in [analytics.as_str(), PM_WEB, test_event] {
        let out = intake
            .process(&req, body.as_bytes(), &mut ids)
            .expect("bench body parses");
        assert!(out[0].event.is_some(), "{:?}", out[0].verdict);
    }

    let mut group = c.benchmark_group("intake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("analytics_test_2.0.0_example", |b| {
        b.iter(|| intake.process(&req, black_box(analytics.as_bytes()), &mut ids))
    });
    println!("product-metrics web event: {} bytes", PM_WEB.len());
    group.bench_function("product_metrics_web_1kb", |b| {
        b.iter(|| intake.process(&req, black_box(PM_WEB.as_bytes()), &mut ids))
    });
    // The same event as clients send it: 50 to a request (the load generator's default),
    // so what a body costs once (parser set-up, the receive time's text) is shared.
    let fifty = format!("[{}]", vec![PM_WEB; 50].join(","));
    let out = intake
        .process(&req, fifty.as_bytes(), &mut ids)
        .expect("the 50-event body parses");
    assert!(out.iter().all(|o| o.event.is_some()));
    group.throughput(Throughput::Elements(50));
    group.bench_function("product_metrics_web_1kb_x50", |b| {
        b.iter(|| intake.process(&req, black_box(fifty.as_bytes()), &mut ids))
    });
    group.throughput(Throughput::Elements(1));
    // The two largest stages alone, to see where the time goes.
    group.bench_function("stage_parse_1kb", |b| {
        b.iter(|| Tape::parse(black_box(PM_WEB)))
    });
    let enriched = PM_WEB.replacen(
        "\"meta\":{",
        "\"meta\":{\"id\":\"3c1f9a02-b4e6-4d8a-8c5e-1c1f9a02b4e6\",\"dt\":\"2026-11-27T10:15:00.123Z\",",
        1,
    );
    let tape = Tape::parse(&enriched).expect("the bench event parses");
    let schema = intake
        .registry()
        .resolve("/analytics/product_metrics/web/base/1.3.0")
        .expect("the product-metrics schema is loaded");
    assert!(schema.validate_node(TapeNode::new(&tape, 0)).is_ok());
    group.bench_function("stage_validate_1kb", |b| {
        b.iter(|| {
            schema
                .validate_node(TapeNode::new(black_box(&tape), 0))
                .is_ok()
        })
    });
    let mixed: Vec<&str> = (0..500)
        .map(|i| match i % 10 {
            0..=4 => PM_WEB,
            5..=7 => analytics.as_str(),
            _ => test_event,
        })
        .collect();
    let mixed = format!("[{}]", mixed.join(","));
    group.throughput(Throughput::Elements(500));
    group.bench_function("mixed_batch_500", |b| {
        b.iter(|| intake.process(&req, black_box(mixed.as_bytes()), &mut ids))
    });
    // What the edge does next with 500 accepted events: one frame to the aggregator,
    // which decodes it.
    let batch = Batch {
        id: [7; 16],
        events: (0..500)
            .filter_map(|_| {
                let out = intake.process(&req, PM_WEB.as_bytes(), &mut ids).ok()?;
                out.into_iter().next()?.event
            })
            .collect(),
        errors: Vec::new(),
    };
    assert_eq!(batch.events.len(), 500);
    let limits = WireLimits::default();
    for (name, lz4) in [("wire_encode_500", false), ("wire_encode_500_lz4", true)] {
        group.bench_function(name, |b| b.iter(|| batch.encode(black_box(lz4))));
    }
    for (name, lz4) in [("wire_decode_500", false), ("wire_decode_500_lz4", true)] {
        let frame = batch.encode(lz4);
        group.bench_function(name, |b| {
            b.iter(|| Batch::decode(black_box(&frame), &limits).is_ok())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
