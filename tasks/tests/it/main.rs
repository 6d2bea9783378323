//! Integration tests of the `tasks` crate (one test binary, one module per concern).

mod model;
mod nqueens;
mod results;
mod split;
mod tasks_list;

/// The OEIS A000170 counts for N = 1 to 17 (the engine's table, itself checked by
/// `known_counts_match_the_published_sequence`), by board size.
pub fn oeis_counts() -> Vec<(u8, u64)> {
    (1..=17)
        .map(|n| (n, tasks::nqueens::known_count(n).expect("a known count")))
        .collect()
}
