//! The N-queens engine: counts the completions of a prefix with bitboards.
//!
//! A board state is three bitmasks over the columns of the next row: the columns taken, and
//! the squares attacked along each diagonal. Placing a queen shifts the diagonals by one
//! column. Boards up to 32 columns fit in a `u32`.

use crate::model::{validate_nqueens, TaskError};

/// Counts every solution of the N-queens problem on an `n`x`n` board, using the mirror
/// symmetry of the board (about half the search).
pub fn count_all(n: u8) -> Result<u64, TaskError> {
    validate_nqueens(n, &[])?;
    let depth = n.min(2);
    Ok(crate::split::nqueens_prefixes(n, depth)
        .map(|(prefix, weight)| weight * completions_unchecked(n, &prefix))
        .sum())
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

/// Like [`count_completions`], also counting the nodes visited (a little slower).
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

impl Board {
    fn after(n: u8, prefix: &[u8]) -> Board {
        let all = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
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
    if board.cols == board.all {
        return 1;
    }
    search(board.all, board.cols, board.ld, board.rd)
}

/// Counts completions from a state with at least one free row.
///
/// The last row is not searched: when one row remains, its free squares are the count.
fn search(all: u32, cols: u32, ld: u32, rd: u32) -> u64 {
    let mut avail = all & !(cols | ld | rd);
    let remaining = (all & !cols).count_ones();
    if remaining == 1 {
        return (avail != 0) as u64;
    }
    let mut total = 0;
    while avail != 0 {
        let bit = avail & avail.wrapping_neg();
        avail ^= bit;
        total += search(all, cols | bit, ((ld | bit) << 1) & all, (rd | bit) >> 1);
    }
    total
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
