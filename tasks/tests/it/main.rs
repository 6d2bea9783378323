//! Integration tests of the `tasks` crate (one test binary, one module per concern).

mod model;
mod nqueens;
mod split;

/// The OEIS A000170 counts from `../shared/data/nqueens-counts.tsv`, by board size.
pub fn oeis_counts() -> Vec<(u8, u64)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/nqueens-counts.tsv"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('n'))
        .map(|l| {
            let mut fields = l.split('\t');
            let n = fields.next().unwrap().parse().unwrap();
            let count = fields.next().unwrap().parse().unwrap();
            (n, count)
        })
        .collect()
}
