//! The whole-board count by classes of solutions under the 8 symmetries of the square.
//!
//! No solution (of a board of at least 2 columns) is its own mirror image, so a class holds
//! 8 solutions, 4 if they are invariant under the half turn, or 2 under the quarter turn.
//! The search visits (about) one representative per class:
//!
//! - with a queen in a corner: the class has no other symmetry (the opposite corner would
//!   share its diagonal) and one representative has the queen at row 0, column 0 and the
//!   queen of column 1 below the row numbered by the column of the queen of row 1 (which
//!   picks it over its transpose);
//! - without: the first row's queen at column `b1` in the left half, no queen nearer a
//!   corner along the other three sides (side columns free above row `b1`, constraints on row
//!   `n-1-b1` and the last row). Among the few boards that pass, the ones equal to a rotation
//!   of themselves are weighted 4 or 2, and the ones with a smaller rotation are dropped, by
//!   comparing the board with its rotations row by row ([`Symmetric::check`]).

use super::{all_columns, search};

/// The smallest board counted this way (smaller ones are counted by the mirror split).
pub const MIN_N: u8 = 6;

/// Counts every solution of an `n` board, `MIN_N <= n <= 32`.
pub fn count(n: u8) -> u64 {
    count_from(n, &[])
}

/// Counts the solutions of an `n` board (`MIN_N <= n <= 32`) whose class representative
/// begins with `prefix`: 8, 4 or 2 for each representative found below it, the size of its
/// class. `prefix` must follow [`next_columns`] row by row (the caller checks it); the
/// counts of the prefixes of one depth add up to [`count`].
pub fn count_from(n: u8, prefix: &[u8]) -> u64 {
    let last = n as usize - 1;
    match prefix {
        [] => columns(next_columns(n, prefix))
            .map(|col| count_from(n, &[col]))
            .sum(),
        // A queen in the corner, and no second row yet: one search per second row.
        [0] => columns(next_columns(n, prefix))
            .map(|col| count_from(n, &[0, col]))
            .sum(),
        [0, bound1, ..] => {
            let mut s = Symmetric::new(n, *bound1 as usize);
            let state = State::after(prefix);
            s.corner(prefix.len(), state.ld, state.cols, state.rd);
            8 * s.count8
        }
        [bound1, ..] => {
            let mut s = Symmetric::new(n, *bound1 as usize);
            for (row, &col) in prefix.iter().enumerate() {
                s.board[row] = 1 << col;
            }
            let state = State::after(prefix);
            if prefix.len() > last {
                s.check();
            } else {
                s.no_corner(prefix.len(), state.cols, state.ld, state.rd);
            }
            8 * s.count8 + 4 * s.count4 + 2 * s.count2
        }
    }
}

/// The columns (a bitmask) that the search by classes tries on row `prefix.len()` after
/// `prefix`, itself following these rules: the squares the prefix does not attack, minus
/// the ones the search rules out to visit one representative per class (row 0: the corner
/// or a column left of the middle; with a corner queen, row 1 off the sides and column 1
/// free above the row given by row 1's column; without, the side columns free above the
/// row given by row 0's column, a side column taken by the mirror row, nothing nearer a
/// corner than row 0's queen on the last row). Empty for a complete board.
pub fn next_columns(n: u8, prefix: &[u8]) -> u32 {
    allowed(n, prefix, &State::after(prefix))
}

/// The row of `prefix` that breaks the rules of [`next_columns`], if one does.
pub fn first_off_rule(n: u8, prefix: &[u8]) -> Option<usize> {
    let mut state = State::after(&[]);
    for (row, &col) in prefix.iter().enumerate() {
        if allowed(n, &prefix[..row], &state) & (1u32 << col) == 0 {
            return Some(row);
        }
        state.place(col);
    }
    None
}

/// [`next_columns`], given the state after `prefix`.
fn allowed(n: u8, prefix: &[u8], state: &State) -> u32 {
    let all = all_columns(n);
    let last = n as usize - 1;
    let row = prefix.len();
    if row >= n as usize {
        return 0;
    }
    let free = all & !(state.cols | state.ld | state.rd);
    let sides = 1 | (1u32 << last);
    let allowed = match prefix {
        // The corner, or a column `b` with `b < last - b`.
        [] => {
            1 | (1..last)
                .filter(|&c| 2 * c < last)
                .fold(0, |m, c| m | (1u32 << c))
        }
        [0] => all & !sides,
        [0, bound1, ..] if row < *bound1 as usize => all & !2,
        [0, ..] => all,
        [bound1, ..] => {
            let bound1 = *bound1 as usize;
            if row < bound1 {
                all & !sides
            } else if row == last - bound1 {
                match state.cols & sides {
                    0 => 0,
                    taken if taken != sides => sides,
                    _ => all,
                }
            } else if row == last {
                all & !last_row_mask(n, bound1)
            } else {
                all
            }
        }
    };
    free & allowed
}

/// The columns nearer a corner than column `bound1`: forbidden on the last row.
fn last_row_mask(n: u8, bound1: usize) -> u32 {
    let low = (1u32 << bound1) - 1;
    low | (low << (n as usize - bound1))
}

/// The columns of a mask, from the lowest.
fn columns(mut mask: u32) -> impl Iterator<Item = u8> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let col = mask.trailing_zeros() as u8;
        mask &= mask - 1;
        Some(col)
    })
}

/// The bitboard state of the row after a prefix (diagonals not masked: the searches mask
/// what they read).
struct State {
    cols: u32,
    ld: u32,
    rd: u32,
}

impl State {
    fn after(prefix: &[u8]) -> State {
        let mut state = State {
            cols: 0,
            ld: 0,
            rd: 0,
        };
        for &col in prefix {
            state.place(col);
        }
        state
    }

    /// Places a queen on column `col` of the next row.
    fn place(&mut self, col: u8) {
        let bit = 1u32 << col;
        self.cols |= bit;
        self.ld = (self.ld | bit) << 1;
        self.rd = (self.rd | bit) >> 1;
    }
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
    /// The search's settings for the first queen's column (or, with a queen in the corner,
    /// the second one's) `bound1`.
    fn new(n: u8, bound1: usize) -> Symmetric {
        let last = n as usize - 1;
        let top_bit = 1u32 << last;
        Symmetric {
            last,
            board: [0; 32],
            all: all_columns(n),
            top_bit,
            sides: top_bit | 1,
            last_mask: last_row_mask(n, bound1),
            end_bit: top_bit >> bound1,
            bound1,
            bound2: last - bound1,
            count8: 0,
            count4: 0,
            count2: 0,
        }
    }

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

    /// Without a queen in a corner, from row `start` (`1 <= start <= last`, rows above it in
    /// `board`, their state in `cols`, `ld`, `rd`): an iterative search of the rows left,
    /// like the core search, with the side constraints and the check of each complete board.
    fn no_corner(&mut self, start: usize, cols: u32, ld: u32, rd: u32) {
        let last = self.last;
        let all = self.all;
        let sides = self.sides;
        if start == last {
            let end = all & !(cols | ld | rd) & !self.last_mask;
            if end != 0 {
                self.board[last] = end;
                self.check();
            }
            return;
        }
        let mut row_mask = [all; 32];
        for mask in row_mask.iter_mut().take(self.bound1).skip(1) {
            *mask = all & !sides;
        }
        let mut stack = [(0u32, 0u32, 0u32, 0u32); 32];
        let (mut cols, mut ld, mut rd) = (cols, ld, rd);
        let mut row = start;
        let mut avail = all & !(cols | ld | rd) & row_mask[start];
        if start == self.bound2 {
            match cols & sides {
                0 => avail = 0,
                taken if taken != sides => avail &= sides,
                _ => {}
            }
        }
        loop {
            if avail == 0 {
                if row == start {
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
