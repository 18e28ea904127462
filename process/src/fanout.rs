//! Dependency tracking: an index of who uses what (adjacency lists
//! `target → dependents`, kept in order so they can be paged by a cursor),
//! maintained from events that add and remove edges, and the fan-out that
//! turns a changed target into one job per dependent, a page at a time: each
//! page ends with a continue job carrying the cursor and the root event, so
//! one message does bounded work however many dependents a target has.

use std::collections::{BTreeMap, BTreeSet};

/// Dependents per page, as change-propagation lists them.
pub const PAGE: usize = 500;

/// Where the index is kept: in memory, the embedded store or PostgreSQL.
pub trait Index {
    /// Why the store failed.
    type Error: std::fmt::Display;
    /// `dependent` uses `target`.
    fn add(&mut self, target: &str, dependent: &str) -> Result<(), Self::Error>;
    /// `dependent` no longer uses `target`.
    fn remove(&mut self, target: &str, dependent: &str) -> Result<(), Self::Error>;
    /// Up to `limit` dependents of `target` after `after`, in order.
    fn page(
        &mut self,
        target: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Self::Error>;
    /// Makes the changes so far durable.
    fn sync(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// An index in memory (tests, and the base of the embedded store's).
#[derive(Debug, Default)]
pub struct MemoryIndex(BTreeMap<String, BTreeSet<String>>);

impl MemoryIndex {
    /// Whether `dependent` uses `target`.
    pub fn contains(&self, target: &str, dependent: &str) -> bool {
        self.0.get(target).is_some_and(|ds| ds.contains(dependent))
    }

    /// Every edge, target by target.
    pub fn edges(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|(t, ds)| ds.iter().map(move |d| (t.as_str(), d.as_str())))
    }
}

impl Index for MemoryIndex {
    type Error = std::convert::Infallible;

    fn add(&mut self, target: &str, dependent: &str) -> Result<(), Self::Error> {
        self.0
            .entry(target.to_owned())
            .or_default()
            .insert(dependent.to_owned());
        Ok(())
    }

    fn remove(&mut self, target: &str, dependent: &str) -> Result<(), Self::Error> {
        if let Some(set) = self.0.get_mut(target) {
            set.remove(dependent);
            if set.is_empty() {
                self.0.remove(target);
            }
        }
        Ok(())
    }

    fn page(
        &mut self,
        target: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Self::Error> {
        let Some(set) = self.0.get(target) else {
            return Ok(Vec::new());
        };
        let from = match after {
            Some(a) => std::ops::Bound::Excluded(a.to_owned()),
            None => std::ops::Bound::Unbounded,
        };
        Ok(set
            .range((from, std::ops::Bound::Unbounded))
            .take(limit)
            .cloned()
            .collect())
    }
}

/// The event that started a fan-out: what changed, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// What changed (the target), the key of the root-event cut-off.
    pub signature: String,
    /// The root event's time, Unix milliseconds.
    pub dt_ms: i64,
}

/// One page of a fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// One job per dependent.
    pub dependents: Vec<String>,
    /// Where the next page starts, when there is one: the continue job's cursor.
    pub cont: Option<String>,
}

/// The page of `target`'s dependents after `cursor`, `limit` at most.
pub fn expand<I: Index + ?Sized>(
    index: &mut I,
    target: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page, I::Error> {
    // One more than a page tells whether another page follows.
    let mut dependents = index.page(target, cursor, limit + 1)?;
    let cont = if dependents.len() > limit {
        dependents.truncate(limit);
        dependents.last().cloned()
    } else {
        None
    };
    Ok(Page { dependents, cont })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twelve_hundred_dependents_come_in_three_pages() {
        let mut index = MemoryIndex::default();
        for i in 0..1200 {
            index.add("Template:A", &format!("Page{i:04}")).unwrap();
        }
        index.add("Template:B", "Other").unwrap();
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let p = expand(&mut index, "Template:A", cursor.as_deref(), PAGE).unwrap();
            pages.push(p.dependents.len());
            match p.cont {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(pages, [500, 500, 200]);

        // Edges come and go.
        index.remove("Template:A", "Page0000").unwrap();
        index.remove("Template:B", "Other").unwrap();
        assert_eq!(
            expand(&mut index, "Template:B", None, PAGE)
                .unwrap()
                .dependents
                .len(),
            0
        );
        let first = expand(&mut index, "Template:A", None, 2).unwrap();
        assert_eq!(first.dependents, ["Page0001", "Page0002"]);
        assert_eq!(first.cont.as_deref(), Some("Page0002"));
        // A page that ends the list exactly has no continuation.
        let mut small = MemoryIndex::default();
        small.add("t", "a").unwrap();
        small.add("t", "b").unwrap();
        assert_eq!(expand(&mut small, "t", None, 2).unwrap().cont, None);
    }
}
