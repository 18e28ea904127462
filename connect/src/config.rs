//! `sluice connect`'s configuration: a TOML file of `[[sink]]` tables and a
//! `[source]`, then `SLUICE_CONNECT_*` environment variables over it
//! (nested keys joined by `__`, e.g. `SLUICE_CONNECT_SOURCE__BROKERS`).
//! Every sink setting but `name`, `kind` and `url` has a default; see
//! `connect.example.toml`.

use serde::{Deserialize, Serialize};
use sluice_host::config::LoadError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `sluice connect` reads at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    /// The stream config file (EventStreamConfig shape), as the aggregator reads it.
    pub streams: PathBuf,
    /// Schema repository folders, in resolution order.
    pub repositories: Vec<PathBuf>,
    /// Where `/metrics` is served; `sluice connect --status` reads it there.
    pub metrics_listen: SocketAddr,
    /// Where events are read from.
    pub source: SourceConfig,
    /// The sinks; each runs on its own.
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkConfig>,
}

/// `[source]`: Kafka when `brokers` is set, else the embedded log, as the aggregator chooses its sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The embedded log folder the aggregator writes (its `data_dir` + `/log`).
    pub log_dir: PathBuf,
    /// Kafka bootstrap servers; when set, sinks read Kafka in consumer groups named `sluice-connect-<sink>`.
    pub brokers: String,
    /// Extra librdkafka consumer settings, e.g. `"security.protocol" = "ssl"`.
    #[serde(default)]
    pub kafka: std::collections::BTreeMap<String, String>,
}

/// What a sink writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// A PostgreSQL database: a table per stream.
    Postgres,
    /// A MariaDB (or MySQL) database: a table per stream.
    Mysql,
    /// Redis: a key per event or per entity, or a Redis stream.
    Redis,
    /// A lake of hourly-partitioned Parquet files on a filesystem or an object store.
    Parquet,
}

/// How a Redis sink stores an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisValue {
    /// A hash of the flattened fields (`HSET`), columns as the SQL sinks name them.
    Hash,
    /// The event as JSON (`SET`).
    Json,
    /// An entry of a Redis stream named by the key template (`XADD`), the event as field `event`.
    Stream,
}

/// One `[[sink]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink's name: its consumer group, its key in a stream's `consumers`, its rows in the positions table.
    pub name: String,
    /// `postgres`, `mysql`, `redis` or `parquet`.
    pub kind: SinkKind,
    /// Where the store is: `postgres://user@host:port/db`, `mysql://user:pass@host:port/db`,
    /// `redis://host:port/db`, `file:///path/to/lake` or `s3://bucket/prefix`.
    pub url: String,
    /// Streams taken, besides those whose config says `consumers.<name>.enabled: true`.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Events written in one transaction at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// A batch is written once its first event has waited this long, full or not.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// A stream's table: `{stream}` is the stream name with `.` and `-` made `_`.
    #[serde(default = "default_table")]
    pub table: String,
    /// The table of events the store refused, with the reason (SQL stores).
    #[serde(default = "default_dead_letter_table")]
    pub dead_letter_table: String,
    /// The table of source positions written with every batch (SQL stores).
    #[serde(default = "default_positions_table")]
    pub positions_table: String,
    /// Redis: the key of an event, from `{stream}` and `{field.path}` parts.
    #[serde(default = "default_key")]
    pub key: String,
    /// Redis: how an event is stored.
    #[serde(default = "default_value")]
    pub value: RedisValue,
    /// Redis: seconds a key lives after its last write (0: no expiry).
    #[serde(default)]
    pub ttl_secs: u64,
    /// Parquet: a file is closed and committed once it holds this many bytes; small files
    /// of a complete hour are compacted into files of at least this size.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Parquet: a file is closed and committed this long after its first event at the latest.
    #[serde(default = "default_max_file_age_secs")]
    pub max_file_age_secs: u64,
    /// Parquet: an hour is complete (marked `_SUCCESS`, compacted) this long after its end,
    /// once every partition read has passed it.
    #[serde(default = "default_hour_grace_secs")]
    pub hour_grace_secs: u64,
    /// Parquet: object store settings, e.g. `aws_endpoint`, `aws_region`, `aws_allow_http`
    /// (the `AWS_*`, `GOOGLE_*` and `AZURE_*` environment variables are read too).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

fn default_max_file_bytes() -> u64 {
    128 << 20
}
fn default_max_file_age_secs() -> u64 {
    300
}
fn default_hour_grace_secs() -> u64 {
    600
}

fn default_batch_size() -> usize {
    5000
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_table() -> String {
    "{stream}".to_owned()
}
fn default_dead_letter_table() -> String {
    "sluice_dead_letters".to_owned()
}
fn default_positions_table() -> String {
    "sluice_positions".to_owned()
}
fn default_key() -> String {
    "{stream}:{meta.id}".to_owned()
}
fn default_value() -> RedisValue {
    RedisValue::Hash
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            streams: PathBuf::from("schemas/streams.yaml"),
            repositories: vec![PathBuf::from("schemas")],
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 8423)),
            source: SourceConfig {
                log_dir: PathBuf::from(".sluice/aggregator/log"),
                brokers: String::new(),
                kafka: Default::default(),
            },
            sinks: Vec::new(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable has a wrong key or value.
    #[error("connect configuration: {0}")]
    Invalid(#[from] LoadError),
    /// A sink setting is wrong.
    #[error("connect configuration: sink `{sink}`: {why}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What is wrong.
        why: String,
    },
}

impl ConnectConfig {
    /// `sinks` reading the embedded log at `log_dir`, with one schema repository.
    pub fn on_log(
        streams: PathBuf,
        repo: PathBuf,
        log_dir: PathBuf,
        sinks: Vec<SinkConfig>,
    ) -> ConnectConfig {
        ConnectConfig {
            streams,
            repositories: vec![repo],
            source: SourceConfig {
                log_dir,
                brokers: String::new(),
                kafka: Default::default(),
            },
            sinks,
            ..ConnectConfig::default()
        }
    }

    /// Defaults, then `file`, then `SLUICE_CONNECT_*`; checked.
    pub fn load(file: Option<&Path>) -> Result<ConnectConfig, ConfigError> {
        let config: ConnectConfig =
            sluice_host::config::load(&ConnectConfig::default(), file, "SLUICE_CONNECT_")?;
        config.check()?;
        Ok(config)
    }

    /// Refuses sinks that cannot run: no name or a duplicate, a batch of 0, a bad template.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.sinks {
            let bad = |why: String| ConfigError::Sink {
                sink: s.name.clone(),
                why,
            };
            if !sluice_log::valid_topic(&s.name) {
                return Err(bad(
                    "a sink name is 1 to 249 of a-z A-Z 0-9 . _ - (it names a consumer group)"
                        .into(),
                ));
            }
            if !seen.insert(&s.name) {
                return Err(bad("two sinks have this name".into()));
            }
            if s.batch_size == 0 || s.batch_size > 1_000_000 {
                return Err(bad(format!(
                    "batch_size is {}; give 1 to 1000000",
                    s.batch_size
                )));
            }
            for (what, name) in [
                ("dead_letter_table", &s.dead_letter_table),
                ("positions_table", &s.positions_table),
            ] {
                if !sql_name(name) {
                    return Err(bad(format!(
                        "{what} `{name}` is not a plain table name (a-z 0-9 _, not starting with a digit)"
                    )));
                }
            }
            if s.kind == SinkKind::Parquet {
                if !(s.url.starts_with("file://") || s.url.contains("://")) {
                    return Err(bad(format!(
                        "url `{}` is not a URL: give `file:///path/to/lake` or `s3://bucket/prefix`",
                        s.url
                    )));
                }
                if s.max_file_bytes < 1 << 20 || s.max_file_age_secs == 0 {
                    return Err(bad(
                        "max_file_bytes must be at least 1 MiB and max_file_age_secs at least 1"
                            .into(),
                    ));
                }
            }
            if !s.table.contains("{stream}") && s.kind != SinkKind::Redis {
                return Err(bad(format!(
                    "table `{}` has no `{{stream}}`: every stream would share one table",
                    s.table
                )));
            }
            crate::template::Template::parse(&s.key).map_err(|e| bad(format!("key: {e}")))?;
        }
        Ok(())
    }
}

/// Whether `name` is a table or column name both stores take unquoted.
pub fn sql_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl SinkConfig {
    /// A sink of `kind` named `name` writing `url`, every other setting its default.
    pub fn new(name: &str, kind: SinkKind, url: &str) -> SinkConfig {
        SinkConfig {
            name: name.to_owned(),
            kind,
            url: url.to_owned(),
            streams: Vec::new(),
            batch_size: default_batch_size(),
            flush_interval_ms: default_flush_interval_ms(),
            table: default_table(),
            dead_letter_table: default_dead_letter_table(),
            positions_table: default_positions_table(),
            key: default_key(),
            value: default_value(),
            ttl_secs: 0,
            max_file_bytes: default_max_file_bytes(),
            max_file_age_secs: default_max_file_age_secs(),
            hour_grace_secs: default_hour_grace_secs(),
            options: Default::default(),
        }
    }

    /// The table of `stream`.
    pub fn table_of(&self, stream: &str) -> String {
        let plain: String = stream
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.table.replace("{stream}", &plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_one_sink_takes_the_defaults_and_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connect.toml");
        std::fs::write(
            &path,
            "[[sink]]\nname = \"warehouse\"\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1/test\"\nstreams = [\"sluice.server.event\"]\n",
        )
        .unwrap();
        let c = ConnectConfig::load(Some(&path)).unwrap();
        assert_eq!(c.sinks.len(), 1);
        let s = &c.sinks[0];
        assert_eq!((s.batch_size, s.flush_interval_ms), (5000, 1000));
        assert_eq!(s.table_of("sluice.server.event"), "sluice_server_event");
        assert_eq!(s.positions_table, "sluice_positions");
        assert!(c.source.brokers.is_empty());

        std::fs::write(
            &path,
            "[[sink]]\nname = \"w\"\nkind = \"postgres\"\nurl = \"x\"\ntable = \"all\"\n",
        )
        .unwrap();
        let err = ConnectConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("sink `w`") && err.contains("{stream}"),
            "{err}"
        );
        std::fs::write(
            &path,
            "[[sink]]\nname = \"w\"\nkind = \"kafka\"\nurl = \"x\"\n",
        )
        .unwrap();
        let err = ConnectConfig::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("kafka"), "{err}");
    }
}
