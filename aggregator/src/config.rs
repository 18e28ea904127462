//! The aggregator's configuration: a TOML file, then `SLUICE_AGGREGATOR_*`
//! environment variables over it (nested keys joined by `__`, e.g.
//! `SLUICE_AGGREGATOR_HTTP__LISTEN=127.0.0.1:0`). Every key has a default,
//! so no file is needed to run on a laptop.

use crate::error_stream::ErrorStreamOptions;
use crate::kafka::KafkaOptions;
use serde::{Deserialize, Serialize};
use sluice_host::config::{LoadError, SecretError, read_secret};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything the aggregator reads at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Where the embedded log and generated state live.
    pub data_dir: PathBuf,
    /// The stream config file (EventStreamConfig shape, YAML or JSON).
    pub streams: PathBuf,
    /// Schema repository folders served to edges, in resolution order.
    pub repositories: Vec<PathBuf>,
    /// A bundle file written by `sluice schema bundle`; when set, it is
    /// served instead of `streams` and `repositories`.
    pub bundle: Option<PathBuf>,
    /// HTTP batch ingest.
    pub http: HttpConfig,
    /// QUIC batch ingest.
    pub quic: QuicConfig,
    /// How long repeated event ids are recognized, in seconds.
    pub dedupe_window_secs: u64,
    /// The dedupe window's newest slice is saved to disk at no fewer ids than this
    /// (or at a thirty-second of the window's time).
    pub dedupe_slice_ids: usize,
    /// Batches that may wait for the sink before senders get 503.
    pub sink_queue: usize,
    /// Event bytes that may be queued or being written before senders get 503.
    pub max_in_flight_bytes: usize,
    /// Size at which embedded log segments roll, in bytes.
    pub segment_bytes: u64,
    /// Seconds between reloads of stream config and schemas (SIGHUP reloads at once).
    pub reload_secs: u64,
    /// Hours the embedded log keeps a segment after its last write (0: forever). At least the dedupe window.
    pub retention_hours: u64,
    /// `[kafka]`: with brokers set, events go to Kafka instead of the embedded log.
    pub kafka: KafkaOptions,
    /// `[error_stream]`: where edges' error reports go, and their bound.
    pub error_stream: ErrorStreamConfig,
    /// `[console]`: the console under `/console/`.
    pub console: ConsoleConfig,
}

/// `[console]`: the browser console the aggregator serves under `/console/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console.
    pub enabled: bool,
    /// The read-only console token; prefer `token_file`. Needed unless `http.listen`
    /// is a loopback address (then the console is open to whoever can reach it).
    pub token: Option<String>,
    /// A file whose first line is the console token.
    pub token_file: Option<PathBuf>,
    /// A stream that was flowing and has had no accepted event for this many
    /// seconds is alerted as `zero_flow`; its rate over this many seconds under
    /// `alert_under_ratio` of its last hour's is alerted as `under_rate`.
    pub alert_after_secs: u64,
    /// See `alert_after_secs`.
    pub alert_under_ratio: f64,
    /// The connectors' `/metrics` addresses (`http://host:port/metrics`), for their lag and dead letters.
    pub connectors: Vec<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            token: None,
            token_file: None,
            alert_after_secs: 300,
            alert_under_ratio: 0.1,
            connectors: Vec::new(),
        }
    }
}

impl ConsoleConfig {
    /// The console token, when one is set.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(path) = &self.token_file {
            return read_secret(path)
                .map(Some)
                .map_err(ConfigError::ConsoleTokenFile);
        }
        Ok(self.token.clone().filter(|t| !t.is_empty()))
    }
}

/// `[error_stream]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorStreamConfig {
    /// The stream error events are written to.
    pub stream: String,
    /// `emitter_id` of the error events.
    pub emitter_id: String,
    /// Error events written per second at most; reports over it are dropped and counted.
    pub events_per_second: f64,
    /// How many may come at once above that rate.
    pub burst: u32,
}

impl ErrorStreamConfig {
    /// As the sink takes it.
    pub fn options(&self) -> ErrorStreamOptions {
        ErrorStreamOptions {
            stream: self.stream.clone(),
            emitter_id: self.emitter_id.clone(),
            events_per_second: self.events_per_second,
            burst: self.burst,
        }
    }
}

/// `[quic]`: certificates default to a development PKI generated under `data_dir/tls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicConfig {
    /// Address to listen on (UDP).
    pub listen: SocketAddr,
    /// CA certificate (PEM) that signs edge client certificates.
    pub client_ca: Option<PathBuf>,
    /// Server certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    pub key: Option<PathBuf>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Batch streams open at once per connection.
    pub max_streams_per_connection: u32,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The bearer token edges present; prefer `token_file` outside development.
    pub token: Option<String>,
    /// A file whose first line is the bearer token.
    pub token_file: Option<PathBuf>,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            data_dir: PathBuf::from(".sluice/aggregator"),
            streams: PathBuf::from("schemas/streams.yaml"),
            repositories: vec![PathBuf::from("schemas")],
            bundle: None,
            http: HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8421)),
                token: None,
                token_file: None,
            },
            quic: QuicConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8422)),
                client_ca: None,
                cert: None,
                key: None,
                max_connections: 1024,
                max_streams_per_connection: 64,
            },
            dedupe_window_secs: 3600,
            dedupe_slice_ids: 1 << 20,
            sink_queue: 1024,
            max_in_flight_bytes: 256 * 1024 * 1024,
            segment_bytes: 256 * 1024 * 1024,
            reload_secs: 60,
            retention_hours: 168,
            kafka: KafkaOptions::default(),
            error_stream: {
                let d = ErrorStreamOptions::default();
                ErrorStreamConfig {
                    stream: d.stream,
                    emitter_id: d.emitter_id,
                    events_per_second: d.events_per_second,
                    burst: d.burst,
                }
            },
            console: ConsoleConfig::default(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable has a wrong key or value.
    #[error("aggregator configuration: {0}")]
    Invalid(#[from] LoadError),
    /// The embedded log would delete what the dedupe window must still remember.
    #[error(
        "aggregator configuration: retention_hours ({hours}) is shorter than the dedupe window ({window_secs} s); raise it, or set 0 to keep the log forever"
    )]
    RetentionShorterThanWindow {
        /// `retention_hours`.
        hours: u64,
        /// `dedupe_window_secs`.
        window_secs: u64,
    },
    /// No token is configured for HTTP ingest.
    #[error(
        "aggregator configuration: set http.token_file (or http.token) so that edges can authenticate"
    )]
    NoToken,
    /// The token file cannot be read.
    #[error("aggregator configuration: http.token_file: {0}")]
    TokenFile(#[source] SecretError),
    /// The console token file cannot be read.
    #[error("aggregator configuration: console.token_file: {0}")]
    ConsoleTokenFile(#[source] SecretError),
}

impl AggregatorConfig {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<AggregatorConfig, ConfigError> {
        let config =
            sluice_host::config::load(&AggregatorConfig::default(), file, "SLUICE_AGGREGATOR_")?;
        config.check()?;
        Ok(config)
    }

    /// Checks what no single key can: the log keeps what the dedupe window needs.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.retention_hours > 0
            && self.retention_hours.saturating_mul(3600) < self.dedupe_window_secs
        {
            return Err(ConfigError::RetentionShorterThanWindow {
                hours: self.retention_hours,
                window_secs: self.dedupe_window_secs,
            });
        }
        Ok(())
    }

    /// How long the embedded log keeps a segment after its last write; `None`: forever.
    pub fn log_retention(&self) -> Option<std::time::Duration> {
        (self.retention_hours > 0)
            .then(|| std::time::Duration::from_secs(self.retention_hours.saturating_mul(3600)))
    }

    /// The bearer token, from `token_file` or `token`.
    pub fn token(&self) -> Result<String, ConfigError> {
        if let Some(path) = &self.http.token_file {
            return match read_secret(path) {
                Ok(token) => Ok(token),
                Err(SecretError::Empty { .. }) => Err(ConfigError::NoToken),
                Err(e) => Err(ConfigError::TokenFile(e)),
            };
        }
        self.http
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or(ConfigError::NoToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_the_environment_set_keys_and_bad_combinations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aggregator.toml");
        std::fs::write(
            &file,
            "dedupe_window_secs = 7200\nretention_hours = 24\n[kafka]\nbrokers = \"127.0.0.1:9092\"\n[kafka.properties]\n\"linger.ms\" = \"20\"\n",
        )
        .unwrap();
        let config = AggregatorConfig::load(Some(&file)).unwrap();
        assert_eq!(config.dedupe_window_secs, 7200);
        assert_eq!(config.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(config.kafka.properties["linger.ms"], "20");
        assert_eq!(
            config.log_retention(),
            Some(std::time::Duration::from_secs(24 * 3600))
        );

        // A log kept for less than the dedupe window could not rebuild it after a restart.
        std::fs::write(&file, "dedupe_window_secs = 7200\nretention_hours = 1\n").unwrap();
        let err = AggregatorConfig::load(Some(&file)).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::RetentionShorterThanWindow {
                    hours: 1,
                    window_secs: 7200
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("retention_hours"), "{err}");
        // Zero keeps the log forever.
        std::fs::write(&file, "dedupe_window_secs = 7200\nretention_hours = 0\n").unwrap();
        assert_eq!(
            AggregatorConfig::load(Some(&file)).unwrap().log_retention(),
            None
        );

        // Unknown keys are named.
        std::fs::write(&file, "retention_days = 7\n").unwrap();
        let err = AggregatorConfig::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("retention_days"), "{err}");
    }
}
