//! The connectors' metrics, per sink and stream, served on `/metrics` as
//! `sluice_connect_*`: rows written, records read, dead letters, lag in records and in
//! seconds, and whether a stream is stopped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// A sink and a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SinkStream {
    /// The sink's name.
    pub sink: String,
    /// The stream.
    pub stream: String,
}

/// Every connector metric.
#[derive(Clone, Default)]
pub struct ConnectMetrics {
    /// Rows written (a repeat of a row already in the store is not counted).
    pub rows: Family<SinkStream, Counter>,
    /// Records read and handed to the store (the lake holds them in open files until their
    /// commit: read minus written is what waits there).
    pub read: Family<SinkStream, Counter>,
    /// Events sent to the dead letters.
    pub dead_letters: Family<SinkStream, Counter>,
    /// Records in the source not yet written.
    pub lag_records: Family<SinkStream, Gauge>,
    /// Seconds between now and the newest record written, while records wait.
    pub lag_seconds: Family<SinkStream, Gauge<f64, AtomicU64>>,
    /// 1 while a stream is stopped by a change its table cannot take.
    pub stopped: Family<SinkStream, Gauge>,
}

impl ConnectMetrics {
    /// The registry `/metrics` serves.
    pub fn registry(&self) -> Arc<Registry> {
        sluice_host::metrics::service_registry(
            "sluice_connect",
            &[
                ("rows_written", "Rows written to the store.", &self.rows),
                (
                    "records_read",
                    "Records read and handed to the store (the lake commits them with their file).",
                    &self.read,
                ),
                (
                    "dead_letters",
                    "Events sent to the dead letters, with a reason.",
                    &self.dead_letters,
                ),
                (
                    "lag_records",
                    "Records in the source the sink has not written yet.",
                    &self.lag_records,
                ),
                (
                    "lag_seconds",
                    "Age of the newest record written, while records wait; 0 when caught up.",
                    &self.lag_seconds,
                ),
                (
                    "stream_stopped",
                    "1 while the stream is stopped by a schema change its table cannot take.",
                    &self.stopped,
                ),
            ],
        )
    }
}
