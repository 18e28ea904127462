//! The native edge's configuration: a TOML file, then `SLUICE_EDGE_*`
//! environment variables over it (nested keys joined by `__`, e.g.
//! `SLUICE_EDGE_BATCH__MAX_EVENTS=200`). Every key has a default that works
//! beside `sluice aggregator` on its defaults.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sluice_host::config::{LoadError, SecretError, read_secret};
use sluice_shared::BodyLimits;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything the native edge reads at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Address of the intake's HTTP listener.
    pub listen: SocketAddr,
    /// Where the spool lives.
    pub data_dir: PathBuf,
    /// Aggregators' QUIC addresses (`host:port`), in order of preference.
    pub aggregators: Vec<String>,
    /// The name the aggregators' certificate carries.
    pub server_name: String,
    /// `[tls]`: whom to trust, and how to prove who we are.
    pub tls: TlsConfig,
    /// The pre-shared edge token, used instead of the client certificate when set.
    pub token: Option<String>,
    /// A file whose first line is the edge token.
    pub token_file: Option<PathBuf>,
    /// `[bundle]`: where schemas and stream config come from.
    pub bundle: BundleConfig,
    /// Body and event size limits.
    pub limits: BodyLimits,
    /// `[batch]`: when batches go to the aggregator.
    pub batch: BatchConfig,
    /// `[spool]`: where hasty batches wait while no aggregator answers.
    pub spool: SpoolConfig,
    /// Origins allowed by CORS; `*` allows any. An allowed origin is echoed with
    /// `Access-Control-Allow-Credentials: true` (beacons are credentialed requests).
    pub cors_origins: Vec<String>,
    /// Proxies (address or network) whose `X-Forwarded-For` and `CF-Connecting-IP` are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Longest time a request may take, in seconds.
    pub request_timeout_secs: u64,
    /// Seed of the hash that turns client addresses into rate-limit keys; the same on every edge.
    pub client_hash_seed: u64,
}

/// `[tls]`: defaults to the development PKI `sluice aggregator` generates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate (PEM) that signs the aggregators' certificates.
    pub ca: PathBuf,
    /// This edge's client certificate (PEM), signed by the aggregators' client CA.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// `[bundle]`: the aggregator's `/v1/bundle`, or local files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// `http://host:port/v1/bundle` of an aggregator; used when `repositories` is empty.
    pub url: String,
    /// Schema repository folders, in resolution order; when set, read instead of `url`.
    pub repositories: Vec<PathBuf>,
    /// The stream config file, with `repositories`.
    pub streams: Option<PathBuf>,
    /// Seconds between refreshes (a conditional GET, or re-reading the files).
    pub refresh_secs: u64,
}

/// `[batch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// A batch goes when it holds this many events.
    pub max_events: usize,
    /// Or this many bytes of event JSON.
    pub max_bytes: usize,
    /// Or when its oldest guaranteed event has waited this long, in milliseconds.
    pub guaranteed_age_ms: u64,
    /// Or when its oldest hasty event has waited this long, in milliseconds.
    pub hasty_age_ms: u64,
    /// Batches on their way to aggregators at once.
    pub in_flight: usize,
    /// How long a guaranteed request waits for an aggregator before 503, in milliseconds.
    pub forward_timeout_ms: u64,
    /// LZ4-compress batches (fewer bytes to encrypt and send; off only for events that do not compress).
    pub compress: bool,
}

/// `[spool]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Bytes on disk at most; past them hasty requests get 503.
    pub max_bytes: u64,
    /// Size at which a spool file rolls.
    pub segment_bytes: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        let tls = PathBuf::from(".sluice/aggregator/tls");
        EdgeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8420)),
            data_dir: PathBuf::from(".sluice/edge"),
            aggregators: vec!["127.0.0.1:8422".into()],
            server_name: "localhost".into(),
            tls: TlsConfig {
                ca: tls.join("ca.pem"),
                cert: Some(tls.join("edge.pem")),
                key: Some(tls.join("edge.key.pem")),
            },
            token: None,
            token_file: None,
            bundle: BundleConfig {
                url: "http://127.0.0.1:8421/v1/bundle".into(),
                repositories: Vec::new(),
                streams: None,
                refresh_secs: 30,
            },
            limits: BodyLimits::default(),
            batch: BatchConfig {
                max_events: 500,
                max_bytes: 1024 * 1024,
                guaranteed_age_ms: 10,
                hasty_age_ms: 1000,
                in_flight: 8,
                forward_timeout_ms: 5000,
                compress: true,
            },
            spool: SpoolConfig {
                max_bytes: 1024 * 1024 * 1024,
                segment_bytes: 64 * 1024 * 1024,
            },
            cors_origins: vec!["*".into()],
            trusted_proxies: Vec::new(),
            request_timeout_secs: 30,
            client_hash_seed: 0,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable has a wrong key or value.
    #[error("edge configuration: {0}")]
    Invalid(#[from] LoadError),
    /// A setting that cannot work.
    #[error("edge configuration: {0}")]
    Unusable(String),
    /// The token file cannot be used.
    #[error("edge configuration: token_file: {0}")]
    TokenFile(#[from] SecretError),
}

impl EdgeConfig {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<EdgeConfig, ConfigError> {
        let config = sluice_host::config::load(&EdgeConfig::default(), file, "SLUICE_EDGE_")?;
        config.check()?;
        Ok(config)
    }

    /// Checks what no single key can.
    pub fn check(&self) -> Result<(), ConfigError> {
        let unusable = |m: &str| Err(ConfigError::Unusable(m.to_owned()));
        if self.aggregators.is_empty() {
            return unusable("list at least one aggregator under `aggregators`");
        }
        if self.batch.max_events == 0 || self.batch.max_bytes == 0 || self.batch.in_flight == 0 {
            return unusable(
                "batch.max_events, batch.max_bytes and batch.in_flight must be above 0",
            );
        }
        if !self.bundle.repositories.is_empty() && self.bundle.streams.is_none() {
            return unusable("bundle.repositories needs bundle.streams, the stream config file");
        }
        if self.spool.segment_bytes == 0 || self.spool.max_bytes < self.spool.segment_bytes {
            return unusable(
                "spool.max_bytes must be at least spool.segment_bytes, which must be above 0",
            );
        }
        Ok(())
    }

    /// The edge token, from `token_file` or `token`, if any.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(path) = &self.token_file {
            return Ok(Some(read_secret(path)?));
        }
        Ok(self.token.clone().filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_set_keys_and_unknown_or_unusable_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge.toml");
        std::fs::write(
            &file,
            "aggregators = [\"10.0.0.1:8422\", \"10.0.0.2:8422\"]\ntrusted_proxies = [\"10.0.0.0/8\"]\n[batch]\nmax_events = 50\n",
        )
        .unwrap();
        let config = EdgeConfig::load(Some(&file)).unwrap();
        assert_eq!(config.aggregators.len(), 2);
        assert_eq!(config.batch.max_events, 50);
        assert_eq!(config.batch.hasty_age_ms, 1000);
        assert_eq!(config.limits.max_body_bytes, 4 * 1024 * 1024);

        std::fs::write(&file, "listen_addr = \"127.0.0.1:1\"\n").unwrap();
        let err = EdgeConfig::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("listen_addr"), "{err}");

        std::fs::write(&file, "aggregators = []\n").unwrap();
        let err = EdgeConfig::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("aggregator"), "{err}");
    }
}
