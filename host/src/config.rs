//! Service configuration: defaults, then a TOML file, then environment
//! variables under a prefix (nested keys joined by `__`, e.g.
//! `SLUICE_EDGE_BATCH__MAX_EVENTS=200`), through figment. Unknown keys are
//! refused by the services' `deny_unknown_fields`, and named.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A configuration that does not load: a wrong key or value, with where it came from.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct LoadError(#[from] Box<figment::Error>);

/// `defaults`, then `file` if given, then variables starting with `env_prefix`.
pub fn load<T>(defaults: &T, file: Option<&Path>, env_prefix: &str) -> Result<T, LoadError>
where
    T: Serialize + DeserializeOwned,
{
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment
        .merge(Env::prefixed(env_prefix).split("__"))
        .extract()
        .map_err(|e| LoadError(Box::new(e)))
}

/// A secret kept in a file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its first line is empty.
    #[error("{} is empty: its first line should hold the secret", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The first line of `path`, trimmed: how tokens are kept out of config files.
pub fn read_secret(path: &Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = text.lines().next().unwrap_or_default().trim().to_owned();
    if secret.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        count: u32,
        ratio: f64,
    }

    #[test]
    // figment's Jail takes a closure that returns figment's (large) error type.
    #[allow(clippy::result_large_err)]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "name = \"file\"\n[inner]\ncount = 3\n").unwrap();
        let defaults = Settings {
            name: "default".into(),
            inner: Inner {
                count: 1,
                ratio: 0.5,
            },
        };
        figment::Jail::expect_with(|jail| {
            jail.set_env("SLUICE_HOSTTEST_INNER__RATIO", "0.25");
            let got = load(&defaults, Some(&file), "SLUICE_HOSTTEST_").unwrap();
            assert_eq!(got.name, "file");
            assert_eq!(got.inner.count, 3);
            assert_eq!(got.inner.ratio, 0.25);
            Ok(())
        });
        std::fs::write(&file, "nmae = \"typo\"\n").unwrap();
        let err = load(&defaults, Some(&file), "SLUICE_HOSTTEST_")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nmae"), "{err}");
        let err = load(&defaults, Some(&dir.path().join("missing.toml")), "X_")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn secrets_are_the_first_line_trimmed_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret \nsecond line\n").unwrap();
        assert_eq!(read_secret(&file).unwrap(), "s3cret");
        std::fs::write(&file, "\n").unwrap();
        assert!(matches!(read_secret(&file), Err(SecretError::Empty { .. })));
        assert!(matches!(
            read_secret(&dir.path().join("none")),
            Err(SecretError::Read { .. })
        ));
    }
}
