//! The client for Kotlin, Swift and Python apps, through UniFFI: events go
//! in as JSON text, answers come back as records. Bindings are written by
//! `uniffi-bindgen generate --library <the built library> --language …`
//! (`clients/rust/bindgen` builds it).

use crate::{Client, ClientConfig, ClientError, Submitted};
use std::sync::Arc;
use std::time::Duration;

/// An error, as foreign code sees it.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum SluiceError {
    /// The event or a setting is wrong.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// The queue on disk failed.
    #[error("{message}")]
    Queue {
        /// What failed.
        message: String,
    },
}

impl From<ClientError> for SluiceError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Queue(_) => SluiceError::Queue {
                message: e.to_string(),
            },
            other => SluiceError::Invalid {
                message: other.to_string(),
            },
        }
    }
}

/// What one flush did.
#[derive(Debug, Clone, uniffi::Record)]
pub struct FlushSummary {
    /// Events the edge took.
    pub accepted: u64,
    /// Events refused as invalid, dropped.
    pub invalid: u64,
    /// Events sent again.
    pub retried: u64,
    /// Events still queued.
    pub remaining: u64,
}

/// Counts since the client was opened.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ClientStats {
    /// Events waiting in the queue.
    pub queued: u64,
    /// Events the edge took.
    pub accepted: u64,
    /// Events refused as invalid.
    pub invalid: u64,
    /// Events dropped because the queue was full.
    pub dropped_oldest: u64,
    /// Events withheld by the stream config (disabled, closed, out of sample…).
    pub withheld: u64,
    /// The edge's reasons for the first invalid events.
    pub invalid_reasons: Vec<String>,
}

/// A Sluice producer with a durable queue.
#[derive(uniffi::Object)]
pub struct SluiceClient {
    inner: Client,
}

#[uniffi::export]
impl SluiceClient {
    /// Opens the queue in `queue_dir` (what a killed app left is kept) for the edge at `edge`.
    #[uniffi::constructor]
    pub fn new(edge: String, queue_dir: String, max_queued: u64) -> Result<Arc<Self>, SluiceError> {
        let mut config = ClientConfig::new(edge, queue_dir);
        if max_queued > 0 {
            config.max_queued = max_queued;
        }
        Ok(Arc::new(SluiceClient {
            inner: Client::open(config)?,
        }))
    }

    /// Queues one event (JSON text) of `stream`; its `meta.id`, or null when the
    /// stream config withholds it.
    pub fn submit(
        &self,
        stream: String,
        event_json: String,
    ) -> Result<Option<String>, SluiceError> {
        let event = serde_json::from_str(&event_json)
            .map_err(|e| SluiceError::from(ClientError::NotJson(e.to_string())))?;
        Ok(match self.inner.submit(&stream, event)? {
            Submitted::Queued(id) => Some(id),
            Submitted::Withheld(_) => None,
        })
    }

    /// Sends the queue, for at most `timeout_ms`.
    pub fn flush(&self, timeout_ms: u64) -> Result<FlushSummary, SluiceError> {
        let r = self.inner.flush(Duration::from_millis(timeout_ms))?;
        Ok(FlushSummary {
            accepted: r.accepted,
            invalid: r.invalid,
            retried: r.retried,
            remaining: r.remaining,
        })
    }

    /// Counts since the client was opened.
    pub fn stats(&self) -> ClientStats {
        let s = self.inner.stats();
        ClientStats {
            queued: s.queued,
            accepted: s.accepted,
            invalid: s.invalid,
            dropped_oldest: s.dropped_oldest,
            withheld: s.withheld.values().sum(),
            invalid_reasons: s.invalid_reasons,
        }
    }
}
