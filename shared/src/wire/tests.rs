//! Frames round-trip, share their payloads and strings, and refuse bad input with reasons.

use super::frame::SHARED_PAYLOAD;
use super::*;
use proptest::prelude::*;

fn event(n: u8, json: &str) -> BatchEvent {
    BatchEvent {
        stream: "test.event".into(),
        topic: "local.test.event".into(),
        partition_key: Some("k".into()),
        rate_key: None,
        id: [n; 16],
        received_ms: 1_764_000_000_000,
        dt_ms: 1_764_000_000_000,
        schema_uri: "/test/event/1.0.0".into(),
        dedupe: true,
        json: json.as_bytes().to_vec().into(),
    }
}

#[test]
fn round_trips_plain_and_compressed() {
    let batch = Batch {
        id: [9; 16],
        events: (0..100)
            .map(|i| {
                event(
                    i,
                    r#"{"$schema":"/test/event/1.0.0","meta":{"stream":"test.event"}}"#,
                )
            })
            .collect(),
        errors: Vec::new(),
    };
    let limits = WireLimits::default();
    let plain = batch.encode(false);
    let packed = batch.encode(true);
    assert!(
        packed.len() < plain.len() / 4,
        "{} vs {}",
        packed.len(),
        plain.len()
    );
    assert_eq!(Batch::decode(&plain, &limits).unwrap(), batch);
    assert_eq!(Batch::decode(&packed, &limits).unwrap(), batch);
    assert!(frame_is_compressed(&packed) && !frame_is_compressed(&plain));
    let ack = BatchAck {
        batch_id: batch.id,
        verdicts: (0..100)
            .map(|_| EventAck::RateLimited { retry_after_ms: 5 })
            .collect(),
    };
    assert_eq!(
        BatchAck::decode_for(&ack.encode(), &batch, &limits).unwrap(),
        ack
    );
}

#[test]
fn decoded_events_share_their_stream_topic_and_schema_strings() {
    let batch_of = |streams: usize| Batch {
        id: [3; 16],
        events: (0..120u8)
            .map(|i| {
                // Every 50th name is too long to keep.
                let stream: Arc<str> = if i % 50 == 7 {
                    "s".repeat(300).into()
                } else {
                    format!("stream.{}", usize::from(i) % streams).into()
                };
                BatchEvent {
                    topic: format!("local.{stream}").into(),
                    stream,
                    ..event(i, "{}")
                }
            })
            .collect(),
        errors: Vec::new(),
    };
    let limits = WireLimits::default();
    // Three streams: events of one stream hold one string between them.
    let three = batch_of(3);
    for lz4 in [false, true] {
        let decoded = Batch::decode(&three.encode(lz4), &limits).unwrap();
        assert_eq!(decoded, three);
        let e = &decoded.events;
        assert!(Arc::ptr_eq(&e[0].stream, &e[3].stream));
        assert!(Arc::ptr_eq(&e[1].topic, &e[100].topic));
        assert!(Arc::ptr_eq(&e[0].schema_uri, &e[119].schema_uri));
        assert!(!Arc::ptr_eq(&e[7].stream, &e[57].stream));
    }
    // Forty streams, more than a thread keeps: every string still decodes as sent.
    let forty = batch_of(40);
    assert_eq!(Batch::decode(&forty.encode(false), &limits).unwrap(), forty);
}

#[test]
fn frames_hold_postcards_own_bytes() {
    let batch = Batch {
        id: [6; 16],
        events: (0..30).map(|i| event(i, r#"{"a":"b"}"#)).collect(),
        errors: Vec::new(),
    };
    let frame = batch.encode(false);
    assert_eq!(frame[..2], [WIRE_VERSION, 0]);
    assert_eq!(frame[2..], postcard::to_allocvec(&batch).unwrap());
}

#[test]
fn decoded_events_share_the_payload() {
    let batch = Batch {
        id: [4; 16],
        events: (0..20)
            .map(|i| event(i, &format!(r#"{{"n":{i},"text":"{}"}}"#, "xy".repeat(50))))
            .collect(),
        errors: Vec::new(),
    };
    for compress in [false, true] {
        let frame = batch.encode(compress);
        let decoded = Batch::decode(&frame, &WireLimits::default()).unwrap();
        assert_eq!(decoded, batch);
        // Every event's JSON lies in one buffer, laid out as in the plain frame.
        let plain = batch.encode(false);
        let at = |json: &[u8]| plain.windows(json.len()).position(|w| w == json).unwrap();
        let base = decoded.events[0].json.as_ptr() as usize;
        for e in &decoded.events {
            assert_eq!(
                e.json.as_ptr() as usize - base,
                at(&e.json) - at(&decoded.events[0].json),
                "compress={compress}"
            );
        }
        // Bytes outside any payload are copied, not borrowed.
        SHARED_PAYLOAD.with(|p| assert!(p.borrow().is_none()));
    }
}

#[test]
fn what_lz4_cannot_shrink_goes_plain() {
    // Events of random hex: LZ4 finds next to nothing to repeat.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let events: Vec<BatchEvent> = (0..50)
        .map(|i| {
            let noise: String = (0..900)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b"0123456789abcdef"[(state & 15) as usize])
                })
                .collect();
            event(i, &format!(r#"{{"message":"{noise}"}}"#))
        })
        .collect();
    let batch = Batch {
        id: [3; 16],
        events,
        errors: Vec::new(),
    };
    let frame = batch.encode(true);
    assert!(!frame_is_compressed(&frame));
    assert_eq!(frame, batch.encode(false));
    assert_eq!(
        Batch::decode(&frame, &WireLimits::default()).unwrap(),
        batch
    );
}

#[test]
fn refuses_bad_frames_with_reasons() {
    let limits = WireLimits::default();
    let good = Batch {
        id: [1; 16],
        events: vec![event(1, "{}")],
        errors: Vec::new(),
    }
    .encode(false);
    assert_eq!(Batch::decode(&[], &limits), Err(WireError::Truncated(0)));
    let mut v9 = good.clone();
    v9[0] = 9;
    assert_eq!(
        Batch::decode(&v9, &limits),
        Err(WireError::UnsupportedVersion { found: 9 })
    );
    assert!(matches!(
        Batch::decode(&good[..good.len() - 3], &limits),
        Err(WireError::Payload(_))
    ));
    let mut extra = good.clone();
    extra.push(0);
    assert!(matches!(
        Batch::decode(&extra, &limits),
        Err(WireError::Payload(_))
    ));
    // A compressed frame that claims 4 GiB is refused before any allocation.
    let bomb = [WIRE_VERSION, FLAG_LZ4, 0xff, 0xff, 0xff, 0xff, 0x00];
    assert!(matches!(
        Batch::decode(&bomb, &limits),
        Err(WireError::TooLarge {
            what: "decompressed payload",
            ..
        })
    ));
    let few = WireLimits {
        max_events: 0,
        ..limits
    };
    assert_eq!(
        Batch::decode(&good, &few),
        Err(WireError::TooManyEvents { count: 1, limit: 0 })
    );
    let small = WireLimits {
        max_event_bytes: 1,
        ..limits
    };
    assert!(matches!(
        Batch::decode(&good, &small),
        Err(WireError::TooLarge { what: "event", .. })
    ));
}

proptest! {
    #[test]
    fn batches_round_trip(
        ids in proptest::collection::vec(any::<[u8; 16]>(), 0..20),
        json in "\\PC{0,64}",
        key in proptest::option::of("\\PC{0,16}"),
        compress in any::<bool>(),
    ) {
        let batch = Batch {
            id: [7; 16],
            events: ids.iter().map(|id| BatchEvent { id: *id, partition_key: key.clone(), json: json.clone().into_bytes().into(), ..event(0, "") }).collect(),
            errors: Vec::new(),
        };
        prop_assert_eq!(Batch::decode(&batch.encode(compress), &WireLimits::default()).unwrap(), batch);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), version in 0u8..3, flags in 0u8..3) {
        let mut frame = vec![version, flags];
        frame.extend_from_slice(&bytes);
        let _ = Batch::decode(&frame, &WireLimits::default());
        let _ = BatchAck::decode(&frame, &WireLimits::default());
        let _ = Batch::decode(&bytes, &WireLimits::default());
    }

    #[test]
    fn decoding_corrupted_frames_never_panics(flip in 0usize..4096, bit in 0u8..8, compress in any::<bool>()) {
        let batch = Batch { id: [3; 16], events: (0..8).map(|i| event(i, r#"{"a":[1,2,3],"b":"text text text"}"#)).collect(), errors: Vec::new() };
        let mut frame = batch.encode(compress);
        let i = flip % frame.len();
        frame[i] ^= 1 << bit;
        let _ = Batch::decode(&frame, &WireLimits::default());
    }
}
