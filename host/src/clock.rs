//! The wall clock, read in one place: the core takes time as an argument,
//! and this is where the native hosts get it.

use sluice_shared::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as the core counts time (nanoseconds since the Unix epoch).
pub fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Timestamp::from_unix_nanos(nanos)
}

/// Now, in Unix milliseconds.
pub fn unix_millis() -> i64 {
    now().unix_millis()
}
