//! The store's schema: every wing's (and the SSH pins') migrations, in one ordered list that
//! `store` applies without knowing whose tables they are. A new migration takes the next version
//! after the highest here, in the module that owns its table; `versions_are_contiguous` checks it.

use crate::store::Migration;

/// Versions 1..=7, as released: 1 runs, hosts, commands (jobs) and host_keys (ssh pins); 2 the
/// daemon's firing times (jobs); 3 lifecycle actions; 4 capacity decisions; 5 lifecycle AWS time;
/// 6 when a capacity decision ended; 7 the capacity controller's latest evaluation; 8 the process
/// recording a run (jobs); 9 host-key pins keyed by instance and port; 10 instance host keys from
/// the console (ssh pins); 11 the SHA-256 of a run's shipped script (jobs).
pub const MIGRATIONS: &[Migration] = &{
    const J: &[Migration] = crate::jobs::history::MIGRATIONS;
    const P: &[Migration] = crate::ssh::pins::MIGRATIONS;
    const L: &[Migration] = crate::lifecycle::history::MIGRATIONS;
    const C: &[Migration] = crate::capacity::history::MIGRATIONS;
    [J[0], P[0], J[1], L[0], C[0], L[1], C[1], C[2], J[2], P[1], P[2], J[3]]
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions never go down and never skip one, and every wing's migrations are in the list.
    #[test]
    fn versions_are_contiguous() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions.first(), Some(&1));
        for w in versions.windows(2) {
            assert!(w[1] == w[0] || w[1] == w[0] + 1, "{versions:?}");
        }
        let listed = MIGRATIONS.len();
        let owned = crate::jobs::history::MIGRATIONS.len()
            + crate::ssh::pins::MIGRATIONS.len()
            + crate::lifecycle::history::MIGRATIONS.len()
            + crate::capacity::history::MIGRATIONS.len();
        assert_eq!(listed, owned, "a wing's migration is missing from the list");
    }
}
