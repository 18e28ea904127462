//! Where everything lives in a lake: the datasets (`<table>/year=2026/month=12/
//! day=6/hour=3/part-….parquet`, Hive-style, from `meta.dt` in UTC), and the
//! sink's own bookkeeping under `_sluice/<sink>/` (a name Spark and Hive skip,
//! and no `*.parquet` glob matches): files being written (`staging/`), the
//! commits of each source partition (`positions/`) and compactions under way.

use object_store::path::Path;
use time::OffsetDateTime;

/// An hour: the Unix milliseconds it starts at.
pub type Hour = i64;

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// The hour `ms` falls in.
pub fn hour_of(ms: i64) -> Hour {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// `year=2026/month=12/day=6/hour=3` of an hour: numbers without leading zeros, as
/// Wikimedia's Hive tables have them, so readers infer integer partition columns.
pub fn hour_dir(hour: Hour) -> String {
    let t = OffsetDateTime::from_unix_timestamp(hour.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "year={}/month={}/day={}/hour={}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour()
    )
}

/// The paths of one sink in one lake.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The lake's root in its store.
    pub root: Path,
    /// The sink.
    pub sink: String,
}

impl Layout {
    fn under(&self, rest: &str) -> Path {
        let mut p = self.root.clone();
        for part in rest.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// The folder of an hour of a table.
    pub fn hour(&self, table: &str, hour: Hour) -> Path {
        self.under(&format!("{table}/{}", hour_dir(hour)))
    }

    /// A data file of a partition's records, from `from`, in an hour of a table.
    pub fn data_file(
        &self,
        table: &str,
        hour: Hour,
        tp: &(impl AsRef<str>, i32),
        from: i64,
    ) -> Path {
        self.hour(table, hour).join(format!(
            "part-{}-{}-{from}-{:08x}.zstd.parquet",
            tp.0.as_ref(),
            tp.1,
            fastrand::u32(..)
        ))
    }

    /// The marker of a complete hour.
    pub fn marker(&self, table: &str, hour: Hour) -> Path {
        self.hour(table, hour).join("_SUCCESS")
    }

    /// The staging folder.
    pub fn staging_dir(&self) -> Path {
        self.under(&format!("_sluice/{}/staging", self.sink))
    }

    /// A staging name for a file of `owner` (a partition's `topic+partition`, or `compact`).
    pub fn staging(&self, owner: &str) -> Path {
        self.staging_dir().join(format!(
            "{owner}+{:016x}.parquet.pending",
            fastrand::u64(..)
        ))
    }

    /// The folder of a partition's commits.
    pub fn commits(&self, tp: &(impl AsRef<str>, i32)) -> Path {
        self.under(&format!(
            "_sluice/{}/positions/{}/{}",
            self.sink,
            tp.0.as_ref(),
            tp.1
        ))
    }

    /// A partition's commit number `seq`.
    pub fn commit(&self, tp: &(impl AsRef<str>, i32), seq: u64) -> Path {
        self.commits(tp).join(format!("{seq:020}.json"))
    }

    /// The schema of a table: every version seen, widened.
    pub fn schema(&self, table: &str) -> Path {
        self.under(&format!("_sluice/{}/tables/{table}.json", self.sink))
    }

    /// The compactions folder.
    pub fn compactions(&self) -> Path {
        self.under(&format!("_sluice/{}/compactions", self.sink))
    }

    /// The record of the compaction of an hour of a table.
    pub fn compaction(&self, table: &str, hour: Hour) -> Path {
        self.compactions().join(format!("{table}+{hour}.json"))
    }
}

/// A path written into a commit or a compaction record, read back as it was (not encoded again).
pub fn stored(text: &str) -> Path {
    Path::parse(text).unwrap_or_else(|_| Path::from(text))
}

/// A partition's staging owner name.
pub fn owner(tp: &(impl AsRef<str>, i32)) -> String {
    format!("{}+{}", tp.0.as_ref(), tp.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_utc_hive_folders() {
        // 2026-12-06T03:59:59.999Z
        let ms = 1_796_529_599_999;
        assert_eq!(hour_of(ms), 1_796_526_000_000);
        assert_eq!(hour_dir(hour_of(ms)), "year=2026/month=12/day=6/hour=3");
        let l = Layout {
            root: Path::from("lake"),
            sink: "s".into(),
        };
        assert_eq!(
            l.marker("t", hour_of(ms)).to_string(),
            "lake/t/year=2026/month=12/day=6/hour=3/_SUCCESS"
        );
        assert_eq!(
            l.commit(&("topic.a", 0), 7).to_string(),
            "lake/_sluice/s/positions/topic.a/0/00000000000000000007.json"
        );
    }
}
