//! Producing windows: the times a stream takes events. A window may bound
//! instants (`start`, `end`), weekdays (`days`) and UTC hours of the day
//! (`hours: "08:00-20:00"`, which may wrap midnight); a stream with windows
//! is open when any one of them holds, and one without is always open.

use crate::timestamp::Timestamp;
use serde::{Deserialize, Deserializer};
use time::Weekday;

/// One producing window; every bound it sets must hold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// First instant inside the window (RFC 3339).
    #[serde(default, deserialize_with = "instant")]
    pub start: Option<Timestamp>,
    /// First instant after the window (RFC 3339).
    #[serde(default, deserialize_with = "instant")]
    pub end: Option<Timestamp>,
    /// Weekdays (UTC) inside the window: `mon` … `sun`.
    #[serde(default, deserialize_with = "weekdays")]
    pub days: Option<Vec<Weekday>>,
    /// UTC time of day, `HH:MM-HH:MM`, end exclusive; wraps past midnight when end < start.
    #[serde(default, deserialize_with = "hours")]
    pub hours: Option<(u32, u32)>,
}

impl Window {
    /// Whether `t` lies inside this window.
    pub fn contains(&self, t: Timestamp) -> bool {
        if self.start.is_some_and(|s| t < s) || self.end.is_some_and(|e| t >= e) {
            return false;
        }
        let dt = t.to_offset_date_time();
        if let Some(days) = &self.days
            && !days.contains(&dt.weekday())
        {
            return false;
        }
        if let Some((from, to)) = self.hours {
            let minute = u32::from(dt.hour()) * 60 + u32::from(dt.minute());
            let inside = match from.cmp(&to) {
                std::cmp::Ordering::Less => (from..to).contains(&minute),
                std::cmp::Ordering::Greater => minute >= from || minute < to,
                std::cmp::Ordering::Equal => true,
            };
            if !inside {
                return false;
            }
        }
        true
    }

    /// Checks the bounds make sense together.
    pub fn check(&self) -> Result<(), String> {
        if self.start.is_none() && self.end.is_none() && self.days.is_none() && self.hours.is_none()
        {
            return Err("a window needs at least one of start, end, days, hours".to_owned());
        }
        if let (Some(s), Some(e)) = (self.start, self.end)
            && s >= e
        {
            return Err(format!("start {s} is not before end {e}"));
        }
        if self.days.as_ref().is_some_and(Vec::is_empty) {
            return Err(
                "days is empty: list weekdays such as [mon, tue] or leave it out".to_owned(),
            );
        }
        Ok(())
    }
}

/// Whether `t` falls in any of `windows` (always, when there are none).
pub fn is_open(windows: &[Window], t: Timestamp) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(t))
}

fn instant<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let s = String::deserialize(d)?;
    Timestamp::parse_rfc3339(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn weekdays<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Weekday>>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| match n.to_ascii_lowercase().get(..3) {
            Some("mon") => Ok(Weekday::Monday),
            Some("tue") => Ok(Weekday::Tuesday),
            Some("wed") => Ok(Weekday::Wednesday),
            Some("thu") => Ok(Weekday::Thursday),
            Some("fri") => Ok(Weekday::Friday),
            Some("sat") => Ok(Weekday::Saturday),
            Some("sun") => Ok(Weekday::Sunday),
            _ => Err(serde::de::Error::custom(format!(
                "`{n}` is not a weekday (mon … sun)"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn hours<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(u32, u32)>, D::Error> {
    let s = String::deserialize(d)?;
    let bad = || {
        serde::de::Error::custom(format!(
            "`{s}` is not an hour range such as 08:00-20:00 (UTC)"
        ))
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let minute = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    Ok(Some((
        minute(a).ok_or_else(bad)? % (24 * 60),
        minute(b).ok_or_else(bad)? % (24 * 60),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn window(yaml: &str) -> Window {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn instants_bound_start_inclusive_end_exclusive() {
        let w = window("{start: '2026-12-01T00:00:00Z', end: '2026-12-02T00:00:00Z'}");
        assert!(!w.contains(at("2026-11-30T23:59:59.999Z")));
        assert!(w.contains(at("2026-12-01T00:00:00Z")));
        assert!(w.contains(at("2026-12-01T23:59:59.999Z")));
        assert!(!w.contains(at("2026-12-02T00:00:00Z")));
    }

    #[test]
    fn daily_hours_may_wrap_midnight() {
        let day = window("{hours: '08:00-20:00'}");
        assert!(day.contains(at("2026-11-27T08:00:00Z")));
        assert!(!day.contains(at("2026-11-27T20:00:00Z")));
        assert!(!day.contains(at("2026-11-27T07:59:00Z")));
        let night = window("{hours: '22:00-06:00'}");
        assert!(night.contains(at("2026-11-27T23:30:00Z")));
        assert!(night.contains(at("2026-11-27T05:59:00Z")));
        assert!(!night.contains(at("2026-11-27T12:00:00Z")));
    }

    #[test]
    fn weekly_days_and_hours_combine() {
        // 2026-11-27 is a Friday.
        let w = window("{days: [mon, fri], hours: '09:00-17:00'}");
        assert!(w.contains(at("2026-11-27T10:00:00Z")));
        assert!(!w.contains(at("2026-11-28T10:00:00Z")));
        assert!(!w.contains(at("2026-11-27T18:00:00Z")));
        assert!(is_open(&[], at("2026-11-28T10:00:00Z")));
        assert!(is_open(
            &[w.clone(), window("{days: [sat]}")],
            at("2026-11-28T10:00:00Z")
        ));
    }

    /// The vectors `@sluice/client` is tested on too, so that browsers and edges agree.
    #[test]
    fn the_shared_client_vectors_decide_alike() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../clients/vectors.json")).unwrap();
        let cases = doc["windows"].as_array().unwrap();
        assert!(cases.len() >= 20);
        for case in cases {
            let windows: Vec<Window> = serde_json::from_value(case["windows"].clone()).unwrap();
            let at = case["at"].as_str().unwrap();
            assert_eq!(
                is_open(&windows, super::Timestamp::parse_rfc3339(at).unwrap()),
                case["open"].as_bool().unwrap(),
                "{case}"
            );
        }
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        let e = serde_yaml_ng::from_str::<Window>("{hours: '8-20'}").unwrap_err();
        assert!(e.to_string().contains("hour range"), "{e}");
        let e = serde_yaml_ng::from_str::<Window>("{days: [someday]}").unwrap_err();
        assert!(e.to_string().contains("not a weekday"), "{e}");
        let w = window("{start: '2026-12-02T00:00:00Z', end: '2026-12-01T00:00:00Z'}");
        assert!(w.check().unwrap_err().contains("not before"));
    }
}
