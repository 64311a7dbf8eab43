//! Counting without sharing a cache line between cores: a counter kept as one stripe per core,
//! each thread adding to its own (threads are numbered as they first count, so a runtime's
//! workers — as many as the cores, by default — each get one), summed when read.

use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

/// A value kept as one share per core, each on its own cache line.
#[derive(Debug)]
pub struct Striped<T>(Box<[CachePadded<T>]>);

impl<T: Default> Default for Striped<T> {
    fn default() -> Self {
        Self(
            (0..count())
                .map(|_| CachePadded::new(T::default()))
                .collect(),
        )
    }
}

impl<T> Striped<T> {
    /// This thread's share.
    pub fn mine(&self) -> &T {
        &self.0[this_thread() % self.0.len()]
    }

    /// Every share.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|share| &**share)
    }
}

/// How many stripes a striped counter has: the cores this process may use (1–64).
pub fn count() -> usize {
    static COUNT: LazyLock<usize> =
        LazyLock::new(|| std::thread::available_parallelism().map_or(4, |n| n.get().clamp(1, 64)));
    *COUNT
}

/// The stripe this thread adds to (threads beyond [`count`] share, in turn).
pub fn this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|number| *number) % count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_keeps_its_stripe_and_two_threads_get_two() {
        let here = super::this_thread();
        assert_eq!(here, super::this_thread());
        assert!(here < super::count());
        let there = std::thread::spawn(super::this_thread).join().unwrap();
        if super::count() > 1 {
            assert_ne!(here, there);
        }
    }
}
