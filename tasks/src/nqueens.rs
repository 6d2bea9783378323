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

/// The whole-board count by classes of solutions under the 8 symmetries of the square.
///
/// No solution (of a board of at least 2 columns) is its own mirror image, so a class holds
/// 8 solutions, 4 if they are invariant under the half turn, or 2 under the quarter turn.
/// The search visits (about) one representative per class:
///
/// - with a queen in a corner: the class has no other symmetry (the opposite corner would
///   share its diagonal) and one representative has the queen at row 0, column 0 and the
///   queen of column 1 below the row numbered by the column of the queen of row 1 (which
///   picks it over its transpose);
/// - without: the first row's queen at column `b1` in the left half, no queen nearer a
///   corner along the other three sides (side columns free above row `b1`, constraints on row
///   `n-1-b1` and the last row). Among the few boards that pass, the ones equal to a rotation
///   of themselves are weighted 4 or 2, and the ones with a smaller rotation are dropped, by
///   comparing the board with its rotations row by row ([`Symmetric::check`]).
mod symmetric {
    use super::{all_columns, search};

    /// The smallest board counted this way (smaller ones are counted by the mirror split).
    pub const MIN_N: u8 = 6;

    /// Counts every solution of an `n` board, `MIN_N <= n <= 32`.
    pub fn count(n: u8) -> u64 {
        let last = n as usize - 1;
        let top_bit = 1u32 << last;
        let mut s = Symmetric {
            last,
            board: [0; 32],
            all: all_columns(n),
            top_bit,
            sides: top_bit | 1,
            last_mask: top_bit | 1,
            end_bit: top_bit >> 1,
            bound1: 0,
            bound2: 0,
            count8: 0,
            count4: 0,
            count2: 0,
        };
        // A queen in the corner: row 0 column 0, row 1 column `bound1`.
        for bound1 in 2..last {
            s.bound1 = bound1;
            let bit = 1u32 << bound1;
            s.corner(2, (2 | bit) << 1, 1 | bit, bit >> 1);
        }
        // No queen in a corner: row 0 column `bound1` left of the middle.
        let (mut bound1, mut bound2) = (1, last - 1);
        while bound1 < bound2 {
            s.bound1 = bound1;
            s.bound2 = bound2;
            s.no_corner(1u32 << bound1);
            s.last_mask |= (s.last_mask >> 1) | (s.last_mask << 1);
            s.end_bit >>= 1;
            bound1 += 1;
            bound2 -= 1;
        }
        8 * s.count8 + 4 * s.count4 + 2 * s.count2
    }

    struct Symmetric {
        /// The last row (and column), `n - 1`.
        last: usize,
        /// The queens of the board being checked, one bit per row.
        board: [u32; 32],
        all: u32,
        top_bit: u32,
        /// The two side columns.
        sides: u32,
        /// The columns forbidden on the last row (nearer a corner than the first queen).
        last_mask: u32,
        /// The last row's column that makes a half-turn image possible.
        end_bit: u32,
        bound1: usize,
        bound2: usize,
        count8: u64,
        count4: u64,
        count2: u64,
    }

    impl Symmetric {
        /// With a queen in the corner, from row `row`: column 1 stays free above `bound1`,
        /// then the rest is a plain count.
        fn corner(&mut self, row: usize, ld: u32, cols: u32, rd: u32) {
            if row >= self.bound1 {
                self.count8 += search(self.all, cols, ld, rd);
                return;
            }
            let mut avail = self.all & !(cols | ld | rd) & !2;
            while avail != 0 {
                let bit = avail & avail.wrapping_neg();
                avail ^= bit;
                self.corner(row + 1, (ld | bit) << 1, cols | bit, (rd | bit) >> 1);
            }
        }

        /// Without a queen in a corner, the first queen at `first` (column `bound1`): an
        /// iterative search of rows 1 to `last`, like the core search, with the side
        /// constraints and the check of each complete board.
        fn no_corner(&mut self, first: u32) {
            let last = self.last;
            let all = self.all;
            let sides = self.sides;
            let mut row_mask = [all; 32];
            for mask in row_mask.iter_mut().take(self.bound1).skip(1) {
                *mask = all & !sides;
            }
            self.board[0] = first;
            let mut stack = [(0u32, 0u32, 0u32, 0u32); 32];
            let (mut cols, mut ld, mut rd) = (first, first << 1, first >> 1);
            let mut row = 1usize;
            let mut avail = all & !(cols | ld | rd) & row_mask[1];
            loop {
                if avail == 0 {
                    if row == 1 {
                        return;
                    }
                    row -= 1;
                    (cols, ld, rd, avail) = stack[row];
                    continue;
                }
                let bit = avail & avail.wrapping_neg();
                avail ^= bit;
                let (next_cols, next_ld, next_rd) = (cols | bit, (ld | bit) << 1, (rd | bit) >> 1);
                if row == last - 1 {
                    let end = all & !(next_cols | next_ld | next_rd) & !self.last_mask;
                    if end != 0 {
                        self.board[row] = bit;
                        self.board[last] = end;
                        self.check();
                    }
                    continue;
                }
                let mut next_avail = all & !(next_cols | next_ld | next_rd) & row_mask[row + 1];
                if row + 1 == self.bound2 {
                    // By row `bound2`, a side column must be taken; if only one is, the
                    // queen of row `bound2` goes on the other.
                    let taken = next_cols & sides;
                    if taken == 0 {
                        next_avail = 0;
                    } else if taken != sides {
                        next_avail &= sides;
                    }
                }
                if next_avail == 0 {
                    continue;
                }
                self.board[row] = bit;
                stack[row] = (cols, ld, rd, avail);
                row += 1;
                (cols, ld, rd, avail) = (next_cols, next_ld, next_rd, next_avail);
            }
        }

        /// Compares the complete board with its quarter, half and three-quarter turns, row
        /// by row (as numbers): counts it in its class's size if it is the smallest of them,
        /// drops it otherwise.
        fn check(&mut self) {
            let b = &self.board;
            let last = self.last;
            // Quarter turn: possible only with the queen of row `bound2` in column 0.
            if b[self.bound2] == 1 {
                let mut ptn = 2u32;
                let mut own = 1;
                while own <= last {
                    // The rotated board's row `own`, compared while it is built.
                    let mut bit = 1u32;
                    let mut you = last;
                    while b[you] != ptn && b[own] >= bit {
                        bit <<= 1;
                        you -= 1;
                    }
                    if b[own] > bit {
                        return;
                    }
                    if b[own] < bit {
                        break;
                    }
                    own += 1;
                    ptn <<= 1;
                }
                if own > last {
                    self.count2 += 1;
                    return;
                }
            }
            // Half turn: possible only with the last row's queen at `end_bit`.
            if b[last] == self.end_bit {
                let mut own = 1;
                while own <= last {
                    let you = last - own;
                    let mut bit = 1u32;
                    let mut ptn = self.top_bit;
                    while ptn != b[you] && b[own] >= bit {
                        bit <<= 1;
                        ptn >>= 1;
                    }
                    if b[own] > bit {
                        return;
                    }
                    if b[own] < bit {
                        break;
                    }
                    own += 1;
                }
                if own > last {
                    self.count4 += 1;
                    return;
                }
            }
            // Three-quarter turn: possible only with the queen of row `bound1` in the last
            // column.
            if b[self.bound1] == self.top_bit {
                let mut ptn = self.top_bit >> 1;
                let mut own = 1;
                while own <= last {
                    let mut bit = 1u32;
                    let mut you = 0;
                    while b[you] != ptn && b[own] >= bit {
                        bit <<= 1;
                        you += 1;
                    }
                    if b[own] > bit {
                        return;
                    }
                    if b[own] < bit {
                        break;
                    }
                    own += 1;
                    ptn >>= 1;
                }
            }
            self.count8 += 1;
        }
    }
}

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
