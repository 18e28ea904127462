//! The dependency index in PostgreSQL: one table of edges, `(target,
//! dependent)` as its primary key, so a page of a target's dependents after
//! a cursor is one range scan of the key's index however many there are.

use crate::fanout::Index;
use postgres::{Client, NoTls};

/// The index in a PostgreSQL table.
pub struct PgIndex {
    client: Client,
    add: String,
    remove: String,
    first: String,
    after: String,
}

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgIndexError {
    /// The table name is not a plain identifier.
    #[error("the index table `{0}` must be letters, digits and `_`, not starting with a digit")]
    Table(String),
    /// The database failed.
    #[error("the dependency index in PostgreSQL: {0}")]
    Db(#[from] postgres::Error),
}

impl PgIndex {
    /// Connects to `url` and makes `table` if it is missing.
    pub fn connect(url: &str, table: &str) -> Result<PgIndex, PgIndexError> {
        let plain = !table.is_empty()
            && !table.starts_with(|c: char| c.is_ascii_digit())
            && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            return Err(PgIndexError::Table(table.to_owned()));
        }
        let mut client = Client::connect(url, NoTls)?;
        client.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (target text NOT NULL, dependent text NOT NULL, PRIMARY KEY (target, dependent))"
        ))?;
        Ok(PgIndex {
            client,
            add: format!(
                "INSERT INTO {table} (target, dependent) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            ),
            remove: format!("DELETE FROM {table} WHERE target = $1 AND dependent = $2"),
            first: format!(
                "SELECT dependent FROM {table} WHERE target = $1 ORDER BY dependent LIMIT $2"
            ),
            after: format!(
                "SELECT dependent FROM {table} WHERE target = $1 AND dependent > $2 ORDER BY dependent LIMIT $3"
            ),
        })
    }
}

impl Index for PgIndex {
    type Error = PgIndexError;

    fn add(&mut self, target: &str, dependent: &str) -> Result<(), Self::Error> {
        self.client.execute(&self.add, &[&target, &dependent])?;
        Ok(())
    }

    fn remove(&mut self, target: &str, dependent: &str) -> Result<(), Self::Error> {
        self.client.execute(&self.remove, &[&target, &dependent])?;
        Ok(())
    }

    fn page(
        &mut self,
        target: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Self::Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            None => self.client.query(&self.first, &[&target, &limit])?,
            Some(a) => self.client.query(&self.after, &[&target, &a, &limit])?,
        };
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::{PAGE, expand};

    /// The PostgreSQL on this machine (as the connectors' tests use it).
    const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    #[test]
    fn the_index_in_postgresql_pages_twelve_hundred_dependents_in_three() {
        let table = format!("sluice_process_index_test_{}", std::process::id());
        let mut index = PgIndex::connect(URL, &table).expect("PostgreSQL on 127.0.0.1:5432");
        for i in 0..1200 {
            index.add("Template:A", &format!("Page{i:04}")).unwrap();
        }
        index.add("Template:A", "Page0000").unwrap();
        index.remove("Template:A", "Page1199").unwrap();
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let p = expand(&mut index, "Template:A", cursor.as_deref(), PAGE).unwrap();
            sizes.push(p.dependents.len());
            all.extend(p.dependents);
            match p.cont {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(sizes, [500, 500, 199]);
        assert_eq!(all.len(), 1199);
        assert_eq!(all.first().map(String::as_str), Some("Page0000"));
        assert_eq!(all.last().map(String::as_str), Some("Page1198"));
        index
            .client
            .batch_execute(&format!("DROP TABLE {table}"))
            .unwrap();
        assert!(matches!(
            PgIndex::connect(URL, "bad; name"),
            Err(PgIndexError::Table(_))
        ));
    }
}
