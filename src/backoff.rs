//! Waiting after failures: the wait doubles from `first` up to `max` with each failure in a row, and
//! a success starts it over. One type for every retry loop, so none doubles by hand.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// The first failure waits `first`; each one after it twice the last, at most `max` (when `first`
    /// is above `max`, only the first wait is: the capacity controller's interval may be).
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max, next: first }
    }

    /// A failure: how long to wait before the next attempt (the wait after that is doubled, up to `max`).
    pub fn fail(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// A success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// What the next failure would wait.
    pub fn next_wait(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(30), Duration::from_secs(300));
        let waits: Vec<u64> = (0..6).map(|_| b.fail().as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 300, 300]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_secs(30));
        assert_eq!(b.next_wait(), Duration::from_secs(60));
        // A first wait above the bound: the bound from the second on.
        let mut b = Backoff::new(Duration::from_secs(600), Duration::from_secs(300));
        let waits: Vec<u64> = (0..3).map(|_| b.fail().as_secs()).collect();
        assert_eq!(waits, [600, 300, 300]);
    }
}
