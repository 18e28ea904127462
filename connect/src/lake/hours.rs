//! Complete hours: once every partition has passed an hour by the grace
//! period, its small files are compacted into files of at least the target
//! size and the hour gets its `_SUCCESS` marker, so a reader that waits for
//! the marker never sees a compaction under way. A compaction first puts a
//! record of its inputs and outputs (only if none exists for that hour), then
//! moves its outputs in and deletes its inputs; a run that died half way is
//! finished by the next start. Files that come for the hour later (late
//! events) are added beside them; the marker stays.

use super::commit::lost;
use super::layout::{Hour, Layout, stored};
use crate::store::StoreError;
use futures_util::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A compaction: the files it replaces and the files that replace them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Compaction {
    table: String,
    hour: Hour,
    inputs: Vec<String>,
    /// (staging, final) of each output.
    outputs: Vec<(String, String)>,
}

/// Compacts the small files of an hour of a table, then puts its marker.
pub async fn complete(
    store: &Arc<dyn ObjectStore>,
    layout: &Layout,
    table: &str,
    hour: Hour,
    target: u64,
) -> Result<(), StoreError> {
    let marker = layout.marker(table, hour);
    match store.head(&marker).await {
        Ok(_) => return Ok(()),
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(lost("looking for an hour's marker", e)),
    }
    compact(store, layout, table, hour, target).await?;
    store
        .put(&marker, PutPayload::default())
        .await
        .map_err(|e| lost("putting an hour's marker", e))?;
    tracing::info!(%table, hour = %super::hour_dir(hour), "The hour is complete: marked _SUCCESS.");
    Ok(())
}

async fn compact(
    store: &Arc<dyn ObjectStore>,
    layout: &Layout,
    table: &str,
    hour: Hour,
    target: u64,
) -> Result<(), StoreError> {
    let dir = layout.hour(table, hour);
    let listed: Vec<ObjectMeta> = store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| lost("listing an hour's files", e))?;
    let small: Vec<ObjectMeta> = listed
        .into_iter()
        .filter(|m| {
            m.location.parts().count() == dir.parts().count() + 1
                && m.location.as_ref().ends_with(".parquet")
                && m.size < target
        })
        .collect();
    if small.len() < 2 {
        return Ok(());
    }
    // Files of one schema are merged; files written under another schema version stay.
    let mut groups: Vec<(arrow_schema::SchemaRef, Vec<ObjectMeta>)> = Vec::new();
    for m in small {
        let builder = ParquetRecordBatchReaderBuilder::try_new(fetch(store, &m.location).await?)
            .map_err(|e| lost("reading a file to compact", e))?;
        let schema = builder.schema().clone();
        match groups.iter_mut().find(|(s, _)| *s == schema) {
            Some((_, files)) => files.push(m),
            None => groups.push((schema, vec![m])),
        }
    }
    for (schema, files) in groups.into_iter().filter(|(_, f)| f.len() >= 2) {
        let mut outputs: Vec<(String, String)> = Vec::new();
        let mut writer: Option<AsyncArrowWriter<BufWriter>> = None;
        for m in &files {
            let reader = ParquetRecordBatchReaderBuilder::try_new(fetch(store, &m.location).await?)
                .map_err(|e| lost("reading a file to compact", e))?
                .build()
                .map_err(|e| lost("reading a file to compact", e))?;
            for rb in reader {
                let rb = rb.map_err(|e| lost("reading a file to compact", e))?;
                if writer.is_none() {
                    let staging = layout.staging("compact");
                    let path = dir
                        .clone()
                        .join(format!("compacted-{:016x}.zstd.parquet", fastrand::u64(..)));
                    let props = WriterProperties::builder()
                        .set_compression(Compression::ZSTD(ZstdLevel::default()))
                        .set_max_row_group_bytes(Some(super::ROW_GROUP_BYTES))
                        .build();
                    let out = BufWriter::new(store.clone(), staging.clone());
                    writer = Some(
                        AsyncArrowWriter::try_new(out, schema.clone(), Some(props))
                            .map_err(|e| lost("starting a compacted file", e))?,
                    );
                    outputs.push((staging.to_string(), path.to_string()));
                }
                if let Some(w) = writer.as_mut() {
                    w.write(&rb)
                        .await
                        .map_err(|e| lost("writing a compacted file", e))?;
                }
            }
            // Outputs roll at the target size, between input files.
            if writer
                .as_ref()
                .is_some_and(|w| w.bytes_written() as u64 >= target)
                && let Some(w) = writer.take()
            {
                w.close()
                    .await
                    .map_err(|e| lost("finishing a compacted file", e))?;
            }
        }
        if let Some(w) = writer.take() {
            w.close()
                .await
                .map_err(|e| lost("finishing a compacted file", e))?;
        }
        let c = Compaction {
            table: table.to_owned(),
            hour,
            inputs: files.iter().map(|m| m.location.to_string()).collect(),
            outputs,
        };
        let body = serde_json::to_vec(&c).map_err(|e| lost("encoding a compaction", e))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store
            .put_opts(
                &layout.compaction(table, hour),
                PutPayload::from(body),
                opts,
            )
            .await
        {
            Ok(_) => finish(store.as_ref(), &c).await?,
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                // Another process compacts this hour: ours is dropped.
                for (staging, _) in &c.outputs {
                    let _ = store.delete(&stored(staging)).await;
                }
                return Ok(());
            }
            Err(e) => return Err(lost("putting a compaction record", e)),
        }
        tracing::info!(%table, hour = %super::hour_dir(hour), files = c.inputs.len(), into = c.outputs.len(), "Small files of a complete hour compacted.");
    }
    match store.delete(&layout.compaction(table, hour)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(lost("dropping a compaction record", e)),
    }
}

/// A whole object (a small file to compact).
async fn fetch(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<bytes::Bytes, StoreError> {
    store
        .get(path)
        .await
        .map_err(|e| lost("reading a file to compact", e))?
        .bytes()
        .await
        .map_err(|e| lost("reading a file to compact", e))
}

/// Moves a compaction's outputs in and deletes its inputs (each step skipped when done).
async fn finish(store: &dyn ObjectStore, c: &Compaction) -> Result<(), StoreError> {
    for (staging, path) in &c.outputs {
        super::commit::move_in(store, staging, path).await?;
    }
    for input in &c.inputs {
        match store.delete(&stored(input)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(lost("deleting a compacted file's input", e)),
        }
    }
    Ok(())
}

/// Finishes the compactions an earlier run left half done, and marks their hours.
pub async fn recover(store: &dyn ObjectStore, layout: &Layout) -> Result<(), StoreError> {
    let listed: Vec<ObjectMeta> = store
        .list(Some(&layout.compactions()))
        .try_collect()
        .await
        .map_err(|e| lost("listing compactions", e))?;
    for m in listed {
        let bytes = store
            .get(&m.location)
            .await
            .map_err(|e| lost("reading a compaction record", e))?
            .bytes()
            .await
            .map_err(|e| lost("reading a compaction record", e))?;
        let Ok(c) = serde_json::from_slice::<Compaction>(&bytes) else {
            tracing::warn!(record = %m.location, "A compaction record cannot be read; it is left alone.");
            continue;
        };
        finish(store, &c).await?;
        store
            .put(&layout.marker(&c.table, c.hour), PutPayload::default())
            .await
            .map_err(|e| lost("putting an hour's marker", e))?;
        match store.delete(&m.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(lost("dropping a compaction record", e)),
        }
        tracing::info!(table = %c.table, hour = %super::hour_dir(c.hour), "A compaction an earlier run left was finished.");
    }
    Ok(())
}
