/*
 * The classic bitboard N-queens counter (Jeff Somers' algorithm), the reference of the
 * `nqueens` bench: iterative backtracking over one row at a time, with explicit stacks,
 * and the board's mirror symmetry (the first queen on the left half of the first row,
 * counted twice; for odd N, the first queen on the middle column with the second queen on
 * the left half, counted twice).
 *
 * Usage: somers N   (1 <= N <= 31); prints "N SOLUTIONS SECONDS".
 * Build: gcc -O3 -march=native -o somers somers.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef unsigned int u32;

/* Counts the completions of a state at row `row` whose next-row candidates are `avail`. */
static unsigned long long search(int n, int row, u32 cols, u32 ld, u32 rd, u32 avail)
{
    u32 mask = (1u << n) - 1;
    u32 col_st[32], ld_st[32], rd_st[32], avail_st[32];
    unsigned long long count = 0;
    int top = 0; /* levels pushed above the starting one */
    int last = n - 1;

    for (;;) {
        if (avail == 0) {
            if (top == 0)
                break;
            --top;
            --row;
            cols = col_st[top];
            ld = ld_st[top];
            rd = rd_st[top];
            avail = avail_st[top];
            continue;
        }
        u32 bit = avail & -avail;
        avail ^= bit;
        if (row == last) {
            ++count;
            continue;
        }
        col_st[top] = cols;
        ld_st[top] = ld;
        rd_st[top] = rd;
        avail_st[top] = avail;
        ++top;
        ++row;
        cols |= bit;
        ld = (ld | bit) << 1;
        rd = (rd | bit) >> 1;
        avail = mask & ~(cols | ld | rd);
    }
    return count;
}

static unsigned long long count_all(int n)
{
    if (n == 1)
        return 1;
    u32 mask = (1u << n) - 1;
    int half = n / 2;
    /* First queen on the left half of row 0: each solution stands for its mirror too. */
    unsigned long long total = 2 * search(n, 0, 0, 0, 0, ((1u << half) - 1) & mask);
    if (n & 1) {
        /* First queen on the middle column, second queen on the left half of row 1. */
        u32 bit = 1u << half;
        u32 cols = bit, ld = bit << 1, rd = bit >> 1;
        u32 avail = mask & ~(cols | ld | rd) & (bit - 1);
        total += 2 * search(n, 1, cols, ld, rd, avail);
    }
    return total;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s N\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]);
    if (n < 1 || n > 31) {
        fprintf(stderr, "N must be in 1..=31\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long long total = count_all(n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("%d %llu %.6f\n", n, total, secs);
    return 0;
}
