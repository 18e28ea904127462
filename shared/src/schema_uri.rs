//! Schema URIs as events and `$ref`s name them: `/<title>/<version>`, where
//! the version is `X.Y.Z` or `latest`, optionally with `.yaml`/`.json` and a
//! trailing `#`. Anything else (schemes, `..`, empty segments) is refused, so
//! no client can point the core at a resource outside its repositories.

use std::fmt;

/// A semantic version `major.minor.patch`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Version {
    /// Major version: breaking changes.
    pub major: u32,
    /// Minor version: additive changes.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl Version {
    /// Parses `X.Y.Z` with decimal parts and no leading `+`/`-`.
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('.');
        let mut next = || -> Option<u32> {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let v = Version {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        parts.next().is_none().then_some(v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Which version of a title a URI asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionSpec {
    /// An exact version.
    Exact(Version),
    /// The highest version loaded.
    Latest,
}

/// A parsed schema URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaUri {
    /// The schema title, e.g. `analytics/test`.
    pub title: String,
    /// The version asked for.
    pub version: VersionSpec,
}

/// A schema URI that names no schema in the repository layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{uri}` is not a schema URI of the form /<title>/<X.Y.Z|latest>: {reason}")]
pub struct SchemaUriError {
    /// The URI as given.
    pub uri: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl SchemaUri {
    /// Parses a URI relative to the repositories, e.g. `/analytics/test/2.0.0`.
    pub fn parse(uri: &str) -> Result<SchemaUri, SchemaUriError> {
        let err = |reason| SchemaUriError {
            uri: uri.chars().take(256).collect(),
            reason,
        };
        if uri.len() > 1024 {
            return Err(err("it is longer than 1024 bytes"));
        }
        let s = uri.strip_suffix('#').unwrap_or(uri);
        if s.contains(':') {
            return Err(err(
                "URIs with a scheme are not resolved; use a path inside the schema repositories",
            ));
        }
        if s.contains(['\\', '?', '#', '%']) || s.chars().any(char::is_control) {
            return Err(err("it contains a character not allowed in schema paths"));
        }
        let s = s
            .strip_prefix('/')
            .ok_or_else(|| err("it must start with `/`"))?;
        let s = [".yaml", ".yml", ".json"]
            .iter()
            .find_map(|ext| s.strip_suffix(ext))
            .unwrap_or(s);
        let (title, version) = s
            .rsplit_once('/')
            .ok_or_else(|| err("it has no version segment"))?;
        if title.is_empty()
            || title
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(err("its title has an empty, `.` or `..` segment"));
        }
        let version = if version == "latest" {
            VersionSpec::Latest
        } else {
            VersionSpec::Exact(
                Version::parse(version).ok_or_else(|| err("its version is not X.Y.Z or latest"))?,
            )
        };
        Ok(SchemaUri {
            title: title.to_owned(),
            version,
        })
    }
}

impl fmt::Display for SchemaUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            VersionSpec::Exact(v) => write!(f, "/{}/{}", self.title, v),
            VersionSpec::Latest => write!(f, "/{}/latest", self.title),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_repository_forms() {
        for uri in [
            "/analytics/test/2.0.0",
            "/analytics/test/2.0.0.yaml",
            "/analytics/test/2.0.0.json",
            "/analytics/test/2.0.0#",
        ] {
            let u = SchemaUri::parse(uri).unwrap();
            assert_eq!(u.title, "analytics/test");
            assert_eq!(
                u.version,
                VersionSpec::Exact(Version {
                    major: 2,
                    minor: 0,
                    patch: 0
                })
            );
        }
        assert_eq!(
            SchemaUri::parse("/test/event/latest").unwrap().version,
            VersionSpec::Latest
        );
    }

    #[test]
    fn refuses_uris_outside_the_repositories() {
        for uri in [
            "http://evil.example/x/1.0.0",
            "file:///etc/passwd",
            "/../../etc/passwd/1.0.0",
            "/a/./b/1.0.0",
            "analytics/test/1.0.0",
            "/analytics/test/v1",
            "/analytics//test/1.0.0",
            "/1.0.0",
        ] {
            assert!(SchemaUri::parse(uri).is_err(), "{uri} should be refused");
        }
    }
}
