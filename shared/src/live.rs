//! A value replaced whole on reload, while readers keep the copy they took.
//! Reads are lock-free (arc-swap): every request reads the live intake or
//! stream config, and a reload must not make them wait.

use arc_swap::ArcSwap;
use std::sync::Arc;

/// A shared, swappable value.
#[derive(Debug)]
pub struct Live<T>(Arc<ArcSwap<T>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<T> Live<T> {
    /// Holds `value`.
    pub fn new(value: T) -> Self {
        Live(Arc::new(ArcSwap::from_pointee(value)))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// Replaces the value; readers holding the old one keep it until they drop it.
    pub fn set(&self, value: T) {
        self.0.store(Arc::new(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_what_they_took_and_see_what_comes_next() {
        let live = Live::new(1);
        let other = live.clone();
        let before = live.get();
        other.set(2);
        assert_eq!(*before, 1);
        assert_eq!(*live.get(), 2);
    }
}
