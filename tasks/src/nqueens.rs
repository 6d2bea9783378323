//! The N-queens engine: counts the completions of a prefix with bitboards.
//!
//! A board state is three bitmasks over the columns of the next row: the columns taken, and
//! the squares attacked along each diagonal. Placing a queen shifts the diagonals by one
//! column. Boards up to 32 columns fit in a `u32`.
//!
//! Two searches share that representation:
//!
//! - the core search ([`count_completions`]) counts every completion of a prefix. It is an
//!   iterative depth-first search over an explicit stack (no recursion), which skips the
//!   children whose next row is already full and counts the last two rows without a loop;
//! - the whole-board count ([`count_all`]) also uses the rotations of the board: it counts one
//!   representative per class of solutions under the 8 symmetries of the square (the
//!   classic "first queen in a corner or not" method, after Takaken), weighting each by the
//!   size of its class (8, 4 or 2), which is about half the work of the mirror split alone.
//!   [`count_class`] runs the same search from a prefix of it: what a task of a project
//!   split by classes computes ([`crate::split`]).
//!
//! Both are exact; `cargo bench -p tasks --bench nqueens` compares them with the classic C
//! solver (see `tasks/BENCH.md`).

use crate::model::{validate_nqueens, TaskError};

/// OEIS A000170: the number of solutions of the N-queens problem, for N = 0 to 27 (every
/// value known today). Tests and benches check the engine against it.
const A000170: [u64; 28] = [
    1,
    1,
    0,
    0,
    2,
    10,
    4,
    40,
    92,
    352,
    724,
    2_680,
    14_200,
    73_712,
    365_596,
    2_279_184,
    14_772_512,
    95_815_104,
    666_090_624,
    4_968_057_848,
    39_029_188_884,
    314_666_222_712,
    2_691_008_701_644,
    24_233_937_684_440,
    227_514_171_973_736,
    2_207_893_435_808_352,
    22_317_699_616_364_044,
    234_907_967_154_122_528,
];

/// The published number of solutions on an `n`x`n` board (OEIS A000170), for `n` up to 27;
/// `None` past the last known value.
pub const fn known_count(n: u8) -> Option<u64> {
    if (n as usize) < A000170.len() {
        Some(A000170[n as usize])
    } else {
        None
    }
}

/// Counts every solution of the N-queens problem on an `n`x`n` board, using the symmetries
/// of the board (mirrors and rotations).
pub fn count_all(n: u8) -> Result<u64, TaskError> {
    validate_nqueens(n, &[])?;
    if n >= symmetric::MIN_N {
        return Ok(symmetric::count(n));
    }
    Ok(count_all_mirror(n))
}

/// The smallest board that projects split by classes of solutions ([`count_class`]);
/// smaller ones are split by the mirror symmetry alone.
pub const MIN_CLASS_N: u8 = symmetric::MIN_N;

/// Counts the solutions of an `n` board whose representative, in the search by classes of
/// solutions under the 8 symmetries of the square that [`count_all`] does, begins with
/// `prefix`: each representative found counts for its whole class (8, 4 or 2 solutions).
/// The counts of every prefix of one depth that the search visits add up to the board's
/// solutions ([`crate::split::class_prefixes`] lists them); the empty prefix counts them all.
pub fn count_class(n: u8, prefix: &[u8]) -> Result<u64, TaskError> {
    validate_class_prefix(n, prefix)?;
    Ok(symmetric::count_from(n, prefix))
}

/// The columns (bit `c` for column `c`) that the search by classes tries on the row after
/// `prefix`, a prefix it visits; 0 when there are none (or the board is complete).
pub fn class_next_columns(n: u8, prefix: &[u8]) -> u32 {
    symmetric::next_columns(n, prefix)
}

/// Checks that the search by classes visits `prefix` on an `n` board: a valid prefix
/// ([`validate_nqueens`]), `n` at least [`MIN_CLASS_N`], and each queen on a column that
/// [`class_next_columns`] allows after the rows above.
pub fn validate_class_prefix(n: u8, prefix: &[u8]) -> Result<(), TaskError> {
    validate_nqueens(n, prefix)?;
    if n < MIN_CLASS_N {
        return Err(TaskError::Invalid {
            field: "n".into(),
            reason: format!("must be at least {MIN_CLASS_N} for the split by classes"),
        });
    }
    match symmetric::first_off_rule(n, prefix) {
        None => Ok(()),
        Some(row) => Err(TaskError::Invalid {
            field: format!("prefix[{row}]"),
            reason: format!(
                "column {} is not one the search by classes tries after the rows above (the \
                 prefix begins no class representative)",
                prefix[row]
            ),
        }),
    }
}

/// Counts every solution by the mirror split of [`crate::split`] (half the board) and the
/// core search: the reference for small boards, and a cross-check of [`count_all`].
fn count_all_mirror(n: u8) -> u64 {
    let depth = n.min(2);
    crate::split::nqueens_prefixes(n, depth)
        .map(|(prefix, weight)| weight * completions_unchecked(n, &prefix))
        .sum()
}

/// Counts the ways to complete `prefix` (the columns of the queens on the first rows) into a
/// full solution of the `n`-queens problem.
pub fn count_completions(n: u8, prefix: &[u8]) -> Result<u64, TaskError> {
    validate_nqueens(n, prefix)?;
    Ok(completions_unchecked(n, prefix))
}

/// A search's figures, for benchmarks: solutions and nodes (queens placed) visited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchStats {
    /// Completions found.
    pub solutions: u64,
    /// Queens placed during the search.
    pub nodes: u64,
}

/// Like [`count_completions`], also counting the nodes visited (a plain recursive search,
/// slower than [`count_completions`]; its node count is that of a search which places every
/// queen, whatever shortcuts the fast search takes).
pub fn count_completions_with_stats(n: u8, prefix: &[u8]) -> Result<SearchStats, TaskError> {
    validate_nqueens(n, prefix)?;
    let board = Board::after(n, prefix);
    let mut stats = SearchStats::default();
    if board.cols == board.all {
        stats.solutions = 1;
    } else {
        search_with_stats(board.all, board.cols, board.ld, board.rd, &mut stats);
    }
    Ok(stats)
}

/// The bitboard state of the row after a prefix.
#[derive(Debug, Clone, Copy)]
struct Board {
    all: u32,
    cols: u32,
    ld: u32,
    rd: u32,
}

/// The mask of the columns of an `n` board.
fn all_columns(n: u8) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

impl Board {
    fn after(n: u8, prefix: &[u8]) -> Board {
        let all = all_columns(n);
        let mut board = Board {
            all,
            cols: 0,
            ld: 0,
            rd: 0,
        };
        for &col in prefix {
            let bit = 1u32 << col;
            board.cols |= bit;
            board.ld = ((board.ld | bit) << 1) & all;
            board.rd = (board.rd | bit) >> 1;
        }
        board
    }
}

fn completions_unchecked(n: u8, prefix: &[u8]) -> u64 {
    let board = Board::after(n, prefix);
    search(board.all, board.cols, board.ld, board.rd)
}

/// Counts the completions of a state (the queens placed so far give `cols`, `ld`, `rd`).
///
/// Bits of `ld` above the board are ignored (they only move further up), so callers need
/// not mask them.
fn search(all: u32, cols: u32, ld: u32, rd: u32) -> u64 {
    match (all & !cols).count_ones() {
        0 => 1,
        1 => (all & !(cols | ld | rd) != 0) as u64,
        2 => last_two_rows(all, cols, ld, rd),
        _ => search_deep(all, cols, ld, rd),
    }
}

/// Counts the completions of a state with exactly two free rows, without a loop.
///
/// The two free columns `a` < `b` are filled either way round; a placement is valid if its
/// queens are not attacked by the queens above (the diagonals, shifted once more for the
/// last row) and not attacking each other (adjacent columns).
#[inline(always)]
fn last_two_rows(all: u32, cols: u32, ld: u32, rd: u32) -> u64 {
    let free = all & !cols;
    let first = free & !(ld | rd);
    let second = free & !((ld << 1) | (rd >> 1));
    let a = free & free.wrapping_neg();
    let b = free ^ a;
    let ab = (first & a != 0) & (second & b != 0);
    let ba = (first & b != 0) & (second & a != 0);
    let apart = (a << 1) != b;
    (apart & ab) as u64 + (apart & ba) as u64
}

/// The core search: counts the completions of a state with at least three free rows.
///
/// An iterative depth-first search: the explicit stack holds, for each row above the current
/// one, its state and the candidates not tried yet. A child whose next row has no free
/// square is not entered, and the last two rows are counted by [`last_two_rows`].
fn search_deep(all: u32, cols: u32, ld: u32, rd: u32) -> u64 {
    let free_rows = (all & !cols).count_ones() as usize;
    debug_assert!(free_rows >= 3);
    // The stack level from which a queen leaves exactly two free rows.
    let last = free_rows - 3;
    let mut stack = [(0u32, 0u32, 0u32, 0u32); 32];
    let mut top = 0usize;
    let (mut cols, mut ld, mut rd) = (cols, ld, rd);
    let mut avail = all & !(cols | ld | rd);
    let mut count = 0u64;
    loop {
        if avail == 0 {
            if top == 0 {
                return count;
            }
            top -= 1;
            (cols, ld, rd, avail) = stack[top];
            continue;
        }
        let bit = avail & avail.wrapping_neg();
        avail ^= bit;
        let (next_cols, next_ld, next_rd) = (cols | bit, (ld | bit) << 1, (rd | bit) >> 1);
        if top == last {
            count += last_two_rows(all, next_cols, next_ld, next_rd);
            continue;
        }
        let next_avail = all & !(next_cols | next_ld | next_rd);
        if next_avail == 0 {
            continue;
        }
        stack[top] = (cols, ld, rd, avail);
        top += 1;
        (cols, ld, rd, avail) = (next_cols, next_ld, next_rd, next_avail);
    }
}

fn search_with_stats(all: u32, cols: u32, ld: u32, rd: u32, stats: &mut SearchStats) {
    let mut avail = all & !(cols | ld | rd);
    while avail != 0 {
        let bit = avail & avail.wrapping_neg();
        avail ^= bit;
        stats.nodes += 1;
        let next_cols = cols | bit;
        if next_cols == all {
            stats.solutions += 1;
        } else {
            search_with_stats(
                all,
                next_cols,
                ((ld | bit) << 1) & all,
                (rd | bit) >> 1,
                stats,
            );
        }
    }
}

mod symmetric;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_count_equals_mirror_count() {
        for n in symmetric::MIN_N..=13 {
            assert_eq!(symmetric::count(n), count_all_mirror(n), "N = {n}");
        }
    }

    #[test]
    fn last_two_rows_equals_the_plain_search() {
        // Every state with two free rows of the boards up to 9, against the stats search.
        for n in 2..=9u8 {
            for prefix in crate::split::nqueens_prefixes(n, n - 2).map(|(p, _)| p) {
                let board = Board::after(n, &prefix);
                let mut stats = SearchStats::default();
                search_with_stats(board.all, board.cols, board.ld, board.rd, &mut stats);
                assert_eq!(
                    last_two_rows(board.all, board.cols, board.ld, board.rd),
                    stats.solutions,
                    "N = {n}, prefix {prefix:?}"
                );
            }
        }
    }
}
