//! The stores on this machine, for the connector tests: a fresh PostgreSQL
//! or MariaDB database per test (dropped after), a Redis database number
//! emptied first, and `sluice connect` as a process.

use crate::{KillOnDrop, binary};
use std::io::BufRead;
use std::path::Path;
use std::process::Command;

/// Where the stores listen (`.ci/run` checks each answers).
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";
/// MariaDB's root account on the machine.
pub const MARIADB: &str = "mysql://root@127.0.0.1:3306";
/// Redis on the machine.
pub const REDIS: &str = "redis://127.0.0.1:6379";

fn unreachable(what: &str, e: impl std::fmt::Display) -> ! {
    panic!(
        "{what} is not reachable ({e}); the connector tests need PostgreSQL 15 on 127.0.0.1:5432 (trust auth, user postgres), \
         MariaDB on 127.0.0.1:3306 (root, no password) and Redis on 127.0.0.1:6379: start them (e.g. `service postgresql start`, \
         `service mariadb start`, `service redis-server start`)"
    )
}

/// A PostgreSQL database made for one test, dropped when this is.
pub struct PgDatabase {
    /// `postgres://…/<name>`.
    pub url: String,
    name: String,
}

impl PgDatabase {
    /// A new, empty database named `sluice_<tag>_<pid>`.
    pub fn create(tag: &str) -> PgDatabase {
        let name = format!("sluice_{tag}_{}", std::process::id());
        let mut admin = postgres::Client::connect(&format!("{POSTGRES}/postgres"), postgres::NoTls)
            .unwrap_or_else(|e| unreachable("PostgreSQL", e));
        admin
            .simple_query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .and_then(|_| admin.simple_query(&format!("CREATE DATABASE {name}")))
            .expect("a test database is made");
        PgDatabase {
            url: format!("{POSTGRES}/{name}"),
            name,
        }
    }

    /// A connection to it.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("the test database answers")
    }

    /// Ends every other session on the database, as a failing server or network would.
    pub fn kill_sessions(&self) -> u64 {
        let mut c = self.client();
        let rows = c
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .expect("sessions are listed");
        rows.len() as u64
    }

    /// One number from a query.
    pub fn count(&self, sql: &str) -> i64 {
        self.client()
            .query_one(sql, &[])
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) =
            postgres::Client::connect(&format!("{POSTGRES}/postgres"), postgres::NoTls)
        {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A MariaDB database made for one test, dropped when this is.
pub struct MariaDatabase {
    /// `mysql://…/<name>`.
    pub url: String,
    name: String,
}

impl MariaDatabase {
    /// A new, empty database named `sluice_<tag>_<pid>`.
    pub fn create(tag: &str) -> MariaDatabase {
        use mysql::prelude::Queryable;
        let name = format!("sluice_{tag}_{}", std::process::id());
        let mut admin = mysql::Conn::new(mysql::Opts::from_url(MARIADB).expect("a URL"))
            .unwrap_or_else(|e| unreachable("MariaDB", e));
        admin
            .query_drop(format!("DROP DATABASE IF EXISTS {name}"))
            .and_then(|()| admin.query_drop(format!("CREATE DATABASE {name}")))
            .expect("a test database is made");
        MariaDatabase {
            url: format!("{MARIADB}/{name}"),
            name,
        }
    }

    /// A connection to it.
    pub fn conn(&self) -> mysql::Conn {
        mysql::Conn::new(mysql::Opts::from_url(&self.url).expect("a URL"))
            .expect("the test database answers")
    }

    /// One number from a query.
    pub fn count(&self, sql: &str) -> i64 {
        use mysql::prelude::Queryable;
        self.conn()
            .query_first::<i64, _>(sql)
            .ok()
            .flatten()
            .unwrap_or(-1)
    }

    /// Kills every other connection to the database.
    pub fn kill_sessions(&self) -> u64 {
        use mysql::prelude::Queryable;
        let mut c = self.conn();
        let ids: Vec<u64> = c
            .exec(
                "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
                (&self.name,),
            )
            .expect("connections are listed");
        for id in &ids {
            let _ = c.query_drop(format!("KILL {id}"));
        }
        ids.len() as u64
    }
}

impl Drop for MariaDatabase {
    fn drop(&mut self) {
        use mysql::prelude::Queryable;
        if let Ok(mut admin) = mysql::Conn::new(mysql::Opts::from_url(MARIADB).expect("a URL")) {
            let _ = admin.query_drop(format!("DROP DATABASE IF EXISTS {}", self.name));
        }
    }
}

/// Redis database `db`, emptied; its URL and a connection.
pub fn redis_db(db: u8) -> (String, redis::Connection) {
    let url = format!("{REDIS}/{db}");
    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| unreachable("Redis", e));
    redis::cmd("FLUSHDB").exec(&mut conn).expect("FLUSHDB");
    (url, conn)
}

/// Kills every other client connected to Redis database `db`.
pub fn kill_redis_clients(conn: &mut redis::Connection, db: u8) -> u64 {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(conn)
        .expect("CLIENT LIST");
    let mut killed = 0;
    for line in list.lines() {
        let field = |k: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .map(str::to_owned)
        };
        if field("db").as_deref() == Some(&db.to_string())
            && field("cmd").as_deref() != Some("client|list")
            && let Some(id) = field("id")
        {
            let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(&id)
                .query(conn);
            killed += 1;
        }
    }
    killed
}

/// A running `sluice connect` and where its metrics are.
pub struct Connect {
    /// The process.
    pub child: KillOnDrop,
    /// Its `/metrics` address.
    pub metrics: std::net::SocketAddr,
}

/// Starts `sluice connect --config <config>` (with `env` on top) and waits for it to serve metrics.
pub fn start_connect(config: &Path, env: &[(&str, &str)]) -> Connect {
    start_connect_logging(config, env, std::process::Stdio::inherit())
}

/// [`start_connect`], its log lines (warnings and errors) to `log`.
pub fn start_connect_logging(
    config: &Path,
    env: &[(&str, &str)],
    log: impl Into<std::process::Stdio>,
) -> Connect {
    let mut command = Command::new(binary("sluice"));
    command
        .arg("connect")
        .arg("--config")
        .arg(config)
        .env("SLUICE_CONNECT_METRICS_LISTEN", "127.0.0.1:0")
        .env("SLUICE_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("sluice connect starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let child = KillOnDrop(child);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("stdout is readable");
        if let Some(a) = line
            .strip_prefix("connect metrics on http://")
            .and_then(|a| a.strip_suffix("/metrics"))
        {
            let metrics = a.parse().expect("a socket address");
            return Connect { child, metrics };
        }
    }
    panic!("sluice connect exited before it served its metrics");
}
