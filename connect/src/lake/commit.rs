//! A source partition's commits: each is one JSON manifest, put only if no
//! commit of that number exists (a conditional put), naming the files it
//! makes visible and the position after its last record. The files are
//! written to staging names first and renamed into their hour only after
//! their commit stands, so a reader never sees a file whose rows a restart
//! would write again, and a half-written file is never visible.

use super::layout::{Hour, Layout, owner, stored};
use crate::store::StoreError;
use futures_util::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

/// One file a commit makes visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFile {
    /// Where it was written.
    pub staging: String,
    /// Where it becomes visible.
    pub path: String,
    /// The table it belongs to.
    pub table: String,
    /// Its hour.
    pub hour: Hour,
    /// Its rows.
    pub rows: u64,
}

/// A partition's commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Its number: one more than the commit before.
    pub seq: u64,
    /// The offset after the last record it covers.
    pub position: i64,
    /// The files it makes visible.
    pub files: Vec<CommittedFile>,
    /// Hours (table, hour) this partition wrote that had no `_SUCCESS` marker yet.
    pub unmarked: Vec<(String, Hour)>,
}

/// A failure of the object store: the sink starts again from the committed positions.
pub fn lost(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Lost(format!("{what}: {e}"))
}

/// The newest commit of a partition, if it has one.
pub async fn latest(
    store: &dyn ObjectStore,
    layout: &Layout,
    tp: &(impl AsRef<str>, i32),
) -> Result<Option<Manifest>, StoreError> {
    let prefix = layout.commits(tp);
    let listed: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| lost("listing the commits", e))?;
    let newest = listed
        .iter()
        .filter_map(|m| {
            let name = m.location.filename()?;
            let seq = name.strip_suffix(".json")?.parse::<u64>().ok()?;
            Some((seq, m.location.clone()))
        })
        .max_by_key(|(seq, _)| *seq);
    let Some((_, path)) = newest else {
        return Ok(None);
    };
    let bytes = store
        .get(&path)
        .await
        .map_err(|e| lost("reading a commit", e))?
        .bytes()
        .await
        .map_err(|e| lost("reading a commit", e))?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        StoreError::Lost(format!(
            "commit {path} is not a commit this connector wrote ({e}); move it away to start the partition over"
        ))
    })?;
    Ok(Some(m))
}

/// Puts commit `m` unless one of its number exists (then another process wrote the partition).
pub async fn put(
    store: &dyn ObjectStore,
    layout: &Layout,
    tp: &(impl AsRef<str>, i32),
    m: &Manifest,
) -> Result<(), StoreError> {
    let body = serde_json::to_vec(m).map_err(|e| lost("encoding a commit", e))?;
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match store
        .put_opts(&layout.commit(tp, m.seq), PutPayload::from(body), opts)
        .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => Err(StoreError::Fenced(format!(
            "commit {} of {}/{} exists: another process wrote the partition",
            m.seq,
            tp.0.as_ref(),
            tp.1
        ))),
        Err(e) => Err(lost("putting a commit", e)),
    }
}

/// Makes a commit's files visible (again, after a crash: a file already moved is skipped),
/// then drops the commit before it.
pub async fn publish(
    store: &dyn ObjectStore,
    layout: &Layout,
    tp: &(impl AsRef<str>, i32),
    m: &Manifest,
) -> Result<(), StoreError> {
    for f in &m.files {
        move_in(store, &f.staging, &f.path).await?;
    }
    if m.seq > 1 {
        match store.delete(&layout.commit(tp, m.seq - 1)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(lost("dropping an old commit", e)),
        }
    }
    Ok(())
}

/// Renames a finished file from its staging name to where readers find it; a file already
/// moved (before a crash) must be there.
pub async fn move_in(store: &dyn ObjectStore, staging: &str, path: &str) -> Result<(), StoreError> {
    let (from, to) = (stored(staging), stored(path));
    match store.rename(&from, &to).await {
        Ok(()) => Ok(()),
        Err(object_store::Error::NotFound { .. }) => store
            .head(&to)
            .await
            .map(|_| ())
            .map_err(|e| lost(&format!("file {to} is in neither place"), e)),
        Err(e) => Err(lost(&format!("moving {from} to {to}"), e)),
    }
}

/// How old a staging file must be before a sweep deletes it: a file another process just
/// finished (it lost the partition a moment ago and is putting its commit) is left alone.
const SWEEP_AFTER_MS: i64 = 60_000;

/// Deletes staging files of a partition that no commit names (a crash left them behind).
pub async fn sweep(
    store: &dyn ObjectStore,
    layout: &Layout,
    tp: &(impl AsRef<str>, i32),
    keep: &[CommittedFile],
) -> Result<u64, StoreError> {
    let mine = format!("{}+", owner(tp));
    let listed: Vec<_> = store
        .list(Some(&layout.staging_dir()))
        .try_collect()
        .await
        .map_err(|e| lost("listing the staging files", e))?;
    let mut n = 0;
    for m in listed {
        let Some(name) = m.location.filename() else {
            continue;
        };
        let young =
            m.last_modified.timestamp_millis() > sluice_host::clock::unix_millis() - SWEEP_AFTER_MS;
        if !name.starts_with(&mine)
            || young
            || keep.iter().any(|k| k.staging == m.location.as_ref())
        {
            continue;
        }
        match store.delete(&m.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
            Err(e) => return Err(lost("deleting a stale staging file", e)),
        }
    }
    Ok(n)
}
