//! Counting without sharing a cache line between cores: a counter kept as one stripe per core,
//! each thread adding to its own (threads are numbered as they first count, so a runtime's
//! workers — as many as the cores, by default — each get one), summed when read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;

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
