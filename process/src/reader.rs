//! A rule's source thread: reads its topics (Kafka through the rule's
//! consumer group, or the embedded log at the rule's named positions),
//! hands records and assignments to the dispatcher, and commits the
//! positions the dispatcher says are finished.

use crate::runner::{Feed, RunError, Settings, SourceKind};
use sluice_connect::source::{KafkaSource, LogSource, Lookup, Source, Tp};
use sluice_log::ConsumerPosition;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The embedded log's named positions of a rule, per topic.
type Positions = HashMap<Arc<str>, ConsumerPosition>;

/// How often the ends of the partitions are read, for lag.
const ENDS_EVERY: Duration = Duration::from_secs(2);

/// The source thread of a rule: reads, hands records over, commits positions.
pub(crate) fn read(
    rule: &str,
    settings: &Settings,
    topics: Vec<Arc<str>>,
    feed: mpsc::Sender<Feed>,
    commits: std::sync::mpsc::Receiver<Vec<(Tp, i64)>>,
    stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let source_err = |source| RunError::Source {
        rule: rule.to_owned(),
        source,
    };
    let log_err = |source| RunError::Log {
        rule: rule.to_owned(),
        source,
    };
    let consumer = format!("process.{rule}");
    let (mut source, positions): (Box<dyn Source>, Option<Positions>) = match &settings.source {
        SourceKind::Log(dir) => {
            let mut positions = HashMap::new();
            for t in &topics {
                positions.insert(
                    t.clone(),
                    ConsumerPosition::new(dir, t, &consumer).map_err(log_err)?,
                );
            }
            let held: HashMap<Arc<str>, Option<u64>> = positions
                .iter()
                .map(|(t, p)| Ok((t.clone(), p.load()?)))
                .collect::<Result<_, sluice_log::LogError>>()
                .map_err(log_err)?;
            let lookup: Lookup = Box::new(move |tps: &[Tp]| {
                Ok(tps
                    .iter()
                    .map(|(t, _)| held.get(t).copied().flatten().map(|n| n as i64))
                    .collect())
            });
            let s =
                LogSource::open(dir.clone(), topics.clone(), lookup, None).map_err(source_err)?;
            (Box::new(s), Some(positions))
        }
        SourceKind::Kafka { brokers, extra } => {
            let group = format!("{}.{rule}", settings.group_prefix);
            let lookup: Lookup = Box::new(|tps: &[Tp]| Ok(vec![None; tps.len()]));
            let s = KafkaSource::open(brokers, &group, extra, topics.clone(), &[], lookup)
                .map_err(source_err)?;
            s.positions_in_group();
            (Box::new(s), None)
        }
    };
    let mut ends_at = std::time::Instant::now();
    let commit = |source: &mut Box<dyn Source>, moved: Vec<(Tp, i64)>| -> Result<(), RunError> {
        match &positions {
            Some(p) => {
                for ((topic, _), at) in &moved {
                    if let Some(pos) = p.get(topic) {
                        pos.commit(*at as u64, false).map_err(log_err)?;
                    }
                }
            }
            None => source.written(&moved),
        }
        Ok(())
    };
    while !*stop.borrow() {
        while let Ok(moved) = commits.try_recv() {
            commit(&mut source, moved)?;
        }
        if let Some(a) = source.take_assignment() {
            let tps: Vec<Tp> = a.into_keys().collect();
            if feed.blocking_send(Feed::Assigned(tps)).is_err() {
                break;
            }
        }
        if ends_at.elapsed() >= ENDS_EVERY {
            ends_at = std::time::Instant::now();
            if feed.blocking_send(Feed::Ends(source.ends())).is_err() {
                break;
            }
        }
        let records = source
            .poll(500, Duration::from_millis(100))
            .map_err(source_err)?;
        if !records.is_empty() && feed.blocking_send(Feed::Records(records)).is_err() {
            break;
        }
    }
    drop(feed);
    // The dispatcher's last positions, once it has waited for its jobs.
    while let Ok(moved) = commits.recv() {
        commit(&mut source, moved)?;
    }
    if let Some(p) = &positions {
        for pos in p.values() {
            if let Ok(Some(at)) = pos.load() {
                pos.commit(at, true).map_err(log_err)?;
            }
        }
    }
    source.close();
    Ok(())
}
