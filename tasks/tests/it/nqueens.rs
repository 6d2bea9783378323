use tasks::nqueens::{count_all, count_completions, count_completions_with_stats};

#[test]
fn counts_equal_oeis_up_to_15() {
    let counts = crate::oeis_counts();
    assert!(counts.len() >= 15, "the OEIS table is too short");
    for (n, expected) in counts.into_iter().filter(|(n, _)| *n <= 15) {
        assert_eq!(count_all(n).unwrap(), expected, "N = {n}");
    }
}

#[test]
fn completions_of_the_empty_prefix_are_all_solutions() {
    for (n, expected) in crate::oeis_counts().into_iter().filter(|(n, _)| *n <= 11) {
        assert_eq!(count_completions(n, &[]).unwrap(), expected, "N = {n}");
        let stats = count_completions_with_stats(n, &[]).unwrap();
        assert_eq!(stats.solutions, expected, "N = {n} with stats");
        assert!(
            stats.nodes >= expected,
            "N = {n}: nodes must cover the solutions"
        );
    }
}

#[test]
fn completions_of_a_full_board_are_one() {
    // One of the 8-queens solutions.
    assert_eq!(count_completions(8, &[0, 4, 7, 5, 2, 6, 1, 3]).unwrap(), 1);
}

#[test]
fn invalid_prefixes_are_rejected_with_the_row() {
    let err = count_completions(8, &[0, 1]).unwrap_err().to_string();
    assert!(err.contains("prefix[1]"), "{err}");
    let err = count_completions(8, &[9]).unwrap_err().to_string();
    assert!(
        err.contains("prefix[0]") && err.contains("off a board"),
        "{err}"
    );
    let err = count_all(33).unwrap_err().to_string();
    assert!(err.contains("`n`"), "{err}");
}

#[test]
fn count_all_equals_oeis_for_16() {
    // The rotations of the board (`count_all`) on a larger board: about a second.
    let (_, expected) = crate::oeis_counts()
        .into_iter()
        .find(|(n, _)| *n == 16)
        .expect("N = 16 in the OEIS table");
    assert_eq!(count_all(16).unwrap(), expected);
}

#[test]
fn the_fast_search_agrees_with_the_plain_one_on_every_prefix() {
    // The core search (iterative, last two rows counted at once) against the plain recursive
    // search of `count_completions_with_stats`, on every prefix of 0 to 4 queens of a board
    // of 11, every prefix whatever its mirror.
    let n = 11u8;
    let mut prefixes = vec![vec![]];
    for _ in 0..4 {
        let mut next = Vec::new();
        for prefix in &prefixes {
            for col in 0..n {
                let mut longer: Vec<u8> = prefix.clone();
                longer.push(col);
                if count_completions(n, &longer).is_ok() {
                    next.push(longer);
                }
            }
        }
        for prefix in &prefixes {
            let fast = count_completions(n, prefix).unwrap();
            let plain = count_completions_with_stats(n, prefix).unwrap().solutions;
            assert_eq!(fast, plain, "prefix {prefix:?}");
        }
        prefixes = next;
    }
}

/// A solution of the 32-queens problem (the explicit construction for `n % 6 == 2`).
fn solution_32() -> Vec<u8> {
    let n = 32usize;
    let mut cols = vec![0u8; n];
    for i in 0..n / 2 {
        let c = (2 * i + n / 2 - 1) % n;
        cols[i] = c as u8;
        cols[n - 1 - i] = (n - 1 - c) as u8;
    }
    cols
}

#[test]
fn boards_of_32_columns_work() {
    let solution = solution_32();
    assert_eq!(count_completions(32, &solution).unwrap(), 1);
    // Every prefix with at least 20 queens placed: the fast search against the plain one.
    for placed in 20..=32 {
        let prefix = &solution[..placed];
        let fast = count_completions(32, prefix).unwrap();
        let stats = count_completions_with_stats(32, prefix).unwrap();
        assert_eq!(fast, stats.solutions, "{placed} queens placed");
        assert!(fast >= 1, "{placed} queens placed");
    }
}

#[test]
fn known_counts_match_the_published_sequence() {
    // The table is checked against the engine for every board it can count quickly, and
    // its last entries against the published values as printed in OEIS A000170.
    for n in 0..=13u8 {
        let expected = tasks::nqueens::known_count(n).unwrap();
        if n > 0 {
            assert_eq!(count_all(n).unwrap(), expected, "N = {n}");
        }
    }
    assert_eq!(tasks::nqueens::known_count(0), Some(1));
    assert_eq!(
        tasks::nqueens::known_count(27),
        Some(234_907_967_154_122_528)
    );
    assert_eq!(tasks::nqueens::known_count(28), None);
}
