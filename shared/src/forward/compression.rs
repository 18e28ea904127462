//! When to try compressing a batch frame: frames LZ4 cannot shrink by an
//! eighth go plain (the wire encoder's rule), and after such a frame the next
//! [`CompressionGate::REST`] frames do not try, since events that did not
//! compress a moment ago seldom do now, and trying costs as much as
//! compressing.

use std::sync::atomic::{AtomicU32, Ordering};

/// Whether to try compressing the next frame; shared by the tasks that encode frames.
#[derive(Debug, Default)]
pub struct CompressionGate {
    rest: AtomicU32,
}

impl CompressionGate {
    /// Frames that skip compression after one that did not shrink.
    pub const REST: u32 = 15;

    /// Whether to try compressing the next frame.
    pub fn attempt(&self) -> bool {
        self.rest
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
    }

    /// Notes how an attempted frame came out.
    pub fn attempted(&self, frame: &[u8]) {
        if !crate::wire::frame_is_compressed(frame) {
            self.rest.store(Self::REST, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Batch, BatchEvent};

    fn batch(mut json: impl FnMut(u8) -> String) -> Batch {
        Batch {
            id: [1; 16],
            events: (0..40u8)
                .map(|i| BatchEvent {
                    stream: "s".into(),
                    topic: "t".into(),
                    partition_key: None,
                    rate_key: None,
                    id: [i; 16],
                    received_ms: 0,
                    dt_ms: 0,
                    schema_uri: "/s/1.0.0".into(),
                    dedupe: true,
                    json: json(i).into_bytes().into(),
                })
                .collect(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn frames_that_do_not_compress_rest_compression_for_a_while() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let incompressible = batch(|_| {
            (0..400)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect()
        });
        let compressible = batch(|i| format!(r#"{{"n":{i},"text":"{}"}}"#, "ab".repeat(200)));
        let c = CompressionGate::default();
        assert!(c.attempt());
        c.attempted(&compressible.encode(true));
        assert!(c.attempt(), "a frame that compressed keeps compression on");
        c.attempted(&incompressible.encode(true));
        for _ in 0..CompressionGate::REST {
            assert!(!c.attempt());
        }
        assert!(c.attempt(), "compression is tried again after its rest");
    }
}
