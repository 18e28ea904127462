//! Writing into a repository: finding its root and a `current.yaml`,
//! writing files through a rename, links, and a materialized version.

use super::*;

/// Finds the repository folder a path is in: the nearest ancestor holding
/// `.jsonschema-tools.yaml`.
pub(super) fn repo_root_of(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    abs.ancestors()
        .find(|a| a.join(".jsonschema-tools.yaml").is_file())
        .map(Path::to_path_buf)
}

/// The `current.yaml` a path names (itself, or inside the folder).
pub(super) fn current_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("current.yaml")
    } else {
        path.to_path_buf()
    }
}

/// Loads the repository holding `path` first, then `extra` repositories.
pub(super) fn load_for(path: &Path, extra: &[PathBuf]) -> anyhow::Result<(Loaded, String)> {
    let root = repo_root_of(path).with_context(|| {
        format!(
            "{} is not inside a schema repository (no .jsonschema-tools.yaml above it)",
            path.display()
        )
    })?;
    let mut dirs = vec![root.clone()];
    for e in extra {
        let e = std::path::absolute(e)?;
        if e != root {
            dirs.push(e);
        }
    }
    let loaded = Loaded::load(&dirs)?;
    let base = root.join(&loaded.repos[0].base_path);
    let abs = std::path::absolute(path)?;
    let dir = if abs.extension().is_some() {
        abs.parent().map(Path::to_path_buf).unwrap_or(abs)
    } else {
        abs
    };
    let title = dir
        .strip_prefix(&base)
        .with_context(|| format!("{} is not under {}", dir.display(), base.display()))?
        .to_string_lossy()
        .replace('\\', "/");
    if title.is_empty() {
        bail!(
            "{} is the schema base folder, not a schema's folder",
            dir.display()
        );
    }
    Ok((loaded, title))
}

/// Writes `text` to `path` through a temporary file and a rename.
pub(super) fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("sluice-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Points `link` (a file name in `dir`) at `target` (a file name in `dir`).
pub(super) fn write_link(dir: &Path, link: &str, target: &str) -> anyhow::Result<()> {
    let path = dir.join(link);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => std::fs::remove_file(&path)
            .with_context(|| format!("cannot replace {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    #[cfg(unix)]
    let made = std::os::unix::fs::symlink(target, &path);
    #[cfg(not(unix))]
    let made = std::fs::copy(dir.join(target), &path).map(|_| ());
    made.with_context(|| format!("cannot link {} to {target}", path.display()))
}

/// Writes a materialized version and its links; returns the files written.
pub(super) fn write_version(
    dir: &Path,
    repo: &SchemaRepository,
    version: Version,
    schema: &Value,
) -> anyhow::Result<Vec<PathBuf>> {
    let tools = &repo.tools;
    let mut written = Vec::new();
    for ty in &tools.content_types {
        let path = dir.join(format!("{version}.{ty}"));
        let text = if ty == "json" {
            tooling::to_json(schema)
        } else {
            tooling::to_yaml(schema)
        };
        write_file(&path, &text)?;
        written.push(path);
    }
    let Some(first) = tools.content_types.first() else {
        return Ok(written);
    };
    if tools.link_extensionless {
        write_link(dir, &version.to_string(), &format!("{version}.{first}"))?;
        written.push(dir.join(version.to_string()));
    }
    if tools.link_latest {
        let title_versions = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(&format!(".{first}"))
                    .and_then(Version::parse)
            })
            .max()
            .unwrap_or(version);
        let latest = title_versions.max(version);
        for ty in &tools.content_types {
            write_link(dir, &format!("latest.{ty}"), &format!("{latest}.{ty}"))?;
            written.push(dir.join(format!("latest.{ty}")));
        }
        if tools.link_extensionless {
            write_link(dir, "latest", &format!("{latest}.{first}"))?;
            written.push(dir.join("latest"));
        }
    }
    Ok(written)
}
