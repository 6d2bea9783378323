//! Splitting a project into tasks.
//!
//! An N-queens board of size `n` split at depth `k` becomes one task per prefix of `k` queens
//! (the queens of rows 0 to `k-1`), in one of two ways:
//!
//! - **by classes** (boards of [`MIN_CLASS_N`] and more, what [`nqueens_project`] does): the
//!   prefixes that the search by classes of solutions under the 8 symmetries of the square
//!   visits ([`class_prefixes`]). Each task counts the solutions whose class representative
//!   begins with its prefix, 8, 4 or 2 per representative ([`crate::nqueens::count_class`]),
//!   with weight 1: every task gets the whole board's symmetry, about half the work of the
//!   mirror split, and the counts of one depth add up to the board's;
//! - **by the mirror** (smaller boards, and every version 1 task): one task per valid prefix
//!   with the board's mirror symmetry (column `c` <-> `n-1-c`): a prefix whose mirror image
//!   is also a prefix is kept once, with weight 2. The mirror of a prefix starting left of the
//!   middle starts right of it; for odd `n`, prefixes starting on the middle column are paired
//!   by their second queen instead ([`nqueens_prefixes`]).

use crate::model::{
    validate_nqueens, Project, ProjectSpec, Symmetry, Task, TaskError, TaskSpec, Tasks,
    SCHEMA_VERSION,
};
use crate::nqueens::{class_next_columns, MIN_CLASS_N};

/// Builds the N-queens project `id` for a board of size `n` split at `depth`: by classes of
/// solutions from [`MIN_CLASS_N`] columns, by the mirror below.
pub fn nqueens_project(id: &str, n: u8, depth: u8) -> Result<Project, TaskError> {
    crate::model::validate_project_id(id)?;
    validate_nqueens(n, &[])?;
    if depth > n {
        return Err(TaskError::Invalid {
            field: "depth".into(),
            reason: format!("must be at most the board size ({n})"),
        });
    }
    // Each task stored as it is made: deep splits have millions.
    let mut tasks = Tasks::new();
    let mut push = |spec: TaskSpec| {
        tasks.push(&Task {
            schema: spec.min_schema(),
            project: id.to_string(),
            index: tasks.len() as u32,
            timeout_secs: None,
            spec,
        })
    };
    if n >= MIN_CLASS_N {
        class_prefixes(n, depth, |prefix| {
            push(TaskSpec::Nqueens {
                n,
                prefix: prefix.to_vec(),
                weight: 1,
                symmetry: Symmetry::Classes,
            })
        });
    } else {
        for (prefix, weight) in nqueens_prefixes(n, depth) {
            push(TaskSpec::Nqueens {
                n,
                prefix,
                weight,
                symmetry: Symmetry::Mirror,
            });
        }
    }
    Ok(Project {
        schema: SCHEMA_VERSION,
        id: id.to_string(),
        spec: ProjectSpec::Nqueens { n, depth },
        tasks,
    })
}

/// Calls `visit` with each prefix of `depth` queens that the search by classes of an `n`
/// board visits (`n` at least [`MIN_CLASS_N`], `depth` at most `n`), in lexicographic order
/// of columns; the [`crate::nqueens::count_class`] of these prefixes add up to the board's
/// solutions. A visitor rather than a list: deep splits of large boards have millions.
pub fn class_prefixes(n: u8, depth: u8, mut visit: impl FnMut(&[u8])) {
    let mut prefix = Vec::with_capacity(depth as usize);
    extend_classes(n, depth, &mut prefix, &mut visit);
}

fn extend_classes(n: u8, depth: u8, prefix: &mut Vec<u8>, visit: &mut impl FnMut(&[u8])) {
    if prefix.len() == depth as usize {
        visit(prefix);
        return;
    }
    let mut columns = class_next_columns(n, prefix);
    while columns != 0 {
        prefix.push(columns.trailing_zeros() as u8);
        columns &= columns - 1;
        extend_classes(n, depth, prefix, visit);
        prefix.pop();
    }
}

/// The prefixes of `depth` queens of an `n` board with the mirror symmetry, each with its
/// weight, in lexicographic order; the weighted sum of their completions is the board's solution count.
pub fn nqueens_prefixes(n: u8, depth: u8) -> impl Iterator<Item = (Vec<u8>, u64)> {
    let mut out = Vec::new();
    if depth == 0 {
        out.push((Vec::new(), 1));
    } else {
        let mut prefix = Vec::with_capacity(depth as usize);
        extend(n, depth, &mut prefix, &mut out);
    }
    out.into_iter()
}

fn extend(n: u8, depth: u8, prefix: &mut Vec<u8>, out: &mut Vec<(Vec<u8>, u64)>) {
    if prefix.len() == depth as usize {
        if let Some(weight) = mirror_weight(n, prefix) {
            out.push((prefix.clone(), weight));
        }
        return;
    }
    for col in 0..n {
        if !can_extend(n, prefix, col) {
            continue;
        }
        prefix.push(col);
        extend(n, depth, prefix, out);
        prefix.pop();
    }
}

/// The weight of a complete prefix: 2 if it stands for itself and its mirror, 1 if it is its
/// own mirror's only representative, `None` if its mirror represents it.
fn mirror_weight(n: u8, prefix: &[u8]) -> Option<u64> {
    // Compare the prefix with its mirror image, row by row: the first row where they differ
    // decides which of the two is kept (the one further left).
    for &col in prefix {
        let mirror = n - 1 - col;
        if col < mirror {
            return Some(2);
        }
        if col > mirror {
            return None;
        }
    }
    // Symmetric prefix (only the middle column of an odd board, so at most one row deep).
    Some(1)
}

fn can_extend(n: u8, prefix: &[u8], col: u8) -> bool {
    let row = prefix.len();
    col < n
        && prefix
            .iter()
            .enumerate()
            .all(|(r, &c)| c != col && (c as usize).abs_diff(col as usize) != row - r)
}
