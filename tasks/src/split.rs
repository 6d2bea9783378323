//! Splitting a project into tasks.
//!
//! An N-queens board of size `n` split at depth `k` becomes one task per valid prefix of `k`
//! queens, with the board's mirror symmetry (column `c` <-> `n-1-c`): a prefix whose mirror
//! image is also a prefix is kept once, with weight 2. The mirror of a prefix starting left
//! of the middle starts right of it; for odd `n`, prefixes starting on the middle column are
//! paired by their second queen instead.

use crate::model::{
    validate_nqueens, Project, ProjectSpec, Task, TaskError, TaskSpec, SCHEMA_VERSION,
};

/// Builds the N-queens project `id` for a board of size `n` split at `depth`.
pub fn nqueens_project(id: &str, n: u8, depth: u8) -> Result<Project, TaskError> {
    crate::model::validate_project_id(id)?;
    validate_nqueens(n, &[])?;
    if depth > n {
        return Err(TaskError::Invalid {
            field: "depth".into(),
            reason: format!("must be at most the board size ({n})"),
        });
    }
    let tasks = nqueens_prefixes(n, depth)
        .enumerate()
        .map(|(i, (prefix, weight))| Task {
            schema: SCHEMA_VERSION,
            project: id.to_string(),
            index: i as u32,
            timeout_secs: None,
            spec: TaskSpec::Nqueens { n, prefix, weight },
        })
        .collect();
    Ok(Project {
        schema: SCHEMA_VERSION,
        id: id.to_string(),
        spec: ProjectSpec::Nqueens { n, depth },
        tasks,
    })
}

/// The prefixes of `depth` queens of an `n` board, each with its weight, in lexicographic
/// order; the weighted sum of their completions is the board's solution count.
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
