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
