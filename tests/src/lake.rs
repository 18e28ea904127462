//! The lake's readers and stores for the tests: DuckDB (the `duckdb` Python
//! package) to query Parquet datasets, and an S3-compatible server (`moto` in
//! server mode) with a boto3 client to list and fetch what a sink put there.

use crate::process::{KillOnDrop, free_port, wait_until};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs Python `code` with `args`; its stdout, or a panic with its stderr.
fn python(code: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python3 runs (scripts/test installs duckdb and moto for it)");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows DuckDB gives for `sql`, each a JSON array (timestamps and other types as text).
pub fn duckdb(sql: &str) -> Vec<Vec<Value>> {
    let out = python(
        "import duckdb, json, sys\nrows = duckdb.sql(sys.argv[1]).fetchall()\nprint(json.dumps([list(r) for r in rows], default=str))",
        &[sql],
    );
    serde_json::from_str(out.trim()).expect("DuckDB's rows as JSON")
}

/// The one number DuckDB gives for `sql` (e.g. a `count(*)`), or -1 when the query fails
/// (no file yet).
pub fn duckdb_count(sql: &str) -> i64 {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import duckdb, sys\nprint(duckdb.sql(sys.argv[1]).fetchall()[0][0])")
        .arg(sql)
        .output()
        .expect("python3 runs");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("DuckDB: {}", err.trim().lines().last().unwrap_or_default());
        return -1;
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(-1)
}

/// `read_parquet` of every Parquet file of a dataset folder, Hive partitions found, schemas
/// merged by name.
pub fn dataset(dir: &Path) -> String {
    format!(
        "read_parquet('{}/**/*.parquet', hive_partitioning = true, union_by_name = true)",
        dir.display()
    )
}

/// An S3-compatible server (moto) on loopback, with one bucket.
pub struct S3Server {
    _child: KillOnDrop,
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    /// The bucket made at start.
    pub bucket: String,
}

const BOTO: &str = "import boto3, sys\ns3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n";

impl S3Server {
    /// Starts `moto_server` and makes `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m moto.server starts (scripts/test installs moto[server])");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_until("moto answers", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        python(
            &format!("{BOTO}s3.create_bucket(Bucket=sys.argv[2])"),
            &[&endpoint, bucket],
        );
        S3Server {
            _child: KillOnDrop(child),
            endpoint,
            bucket: bucket.to_owned(),
        }
    }

    /// Every key in the bucket, sorted.
    pub fn keys(&self) -> Vec<String> {
        let out = python(
            &format!(
                "{BOTO}import json\nkeys = []\nfor page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2]):\n    keys += [o['Key'] for o in page.get('Contents', [])]\nprint(json.dumps(sorted(keys)))"
            ),
            &[&self.endpoint, &self.bucket],
        );
        serde_json::from_str(out.trim()).expect("keys as JSON")
    }

    /// Fetches every key under `prefix` into `dir`, keeping the paths after the prefix.
    pub fn download(&self, prefix: &str, dir: &Path) {
        python(
            &format!(
                "{BOTO}import os\nfor page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):\n    for o in page.get('Contents', []):\n        dest = os.path.join(sys.argv[4], o['Key'][len(sys.argv[3]):].lstrip('/'))\n        os.makedirs(os.path.dirname(dest), exist_ok=True)\n        s3.download_file(sys.argv[2], o['Key'], dest)"
            ),
            &[
                &self.endpoint,
                &self.bucket,
                prefix,
                &dir.display().to_string(),
            ],
        );
    }
}
