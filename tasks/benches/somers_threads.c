/*
 * The classic bitboard N-queens counter (Jeff Somers' algorithm, as in somers.c) on several
 * threads: the reference of scripts/bench-nqueens.sh for `--local`. The work is split by the
 * queens of the first two rows, with the board's mirror symmetry only (first queen on the
 * left half, counted twice; for odd N, the first queen on the middle column and the second
 * on the left half, counted twice); the threads take these jobs in turn from a shared
 * counter, so that they finish together.
 *
 * Usage: somers_threads N THREADS   (4 <= N <= 31); prints "N SOLUTIONS SECONDS" (wall clock).
 * Build: gcc -O3 -march=native -pthread -o somers_threads somers_threads.c
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef unsigned int u32;

struct job {
    u32 cols, ld, rd;
};

static int n;
static struct job *jobs;
static int job_count;
static int next_job;

/* Counts the completions of a state at row `row` (iterative, explicit stacks). */
static unsigned long long search(int row, u32 cols, u32 ld, u32 rd)
{
    u32 mask = (1u << n) - 1;
    u32 col_st[32], ld_st[32], rd_st[32], avail_st[32];
    unsigned long long count = 0;
    int top = 0;
    int last = n - 1;
    u32 avail = mask & ~(cols | ld | rd);

    if (row > last)
        return 1;
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

/* Adds the jobs of the first queen at `c0`, its second queen among `second` (a mask). */
static void add_jobs(int c0, u32 second)
{
    u32 b0 = 1u << c0;
    u32 mask = (1u << n) - 1;
    u32 avail = mask & ~(b0 | (b0 << 1) | (b0 >> 1)) & second;
    while (avail) {
        u32 b1 = avail & -avail;
        avail ^= b1;
        struct job *j = &jobs[job_count++];
        j->cols = b0 | b1;
        j->ld = (((b0 << 1) | b1) << 1);
        j->rd = (((b0 >> 1) | b1) >> 1);
    }
}

static void *worker(void *arg)
{
    unsigned long long *total = arg;
    for (;;) {
        int i = __atomic_fetch_add(&next_job, 1, __ATOMIC_RELAXED);
        if (i >= job_count)
            break;
        *total += search(2, jobs[i].cols, jobs[i].ld, jobs[i].rd);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s N THREADS\n", argv[0]);
        return 2;
    }
    n = atoi(argv[1]);
    int threads = atoi(argv[2]);
    if (n < 4 || n > 31 || threads < 1 || threads > 256) {
        fprintf(stderr, "N must be in 4..=31 and THREADS in 1..=256\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    u32 mask = (1u << n) - 1;
    int half = n / 2;
    jobs = calloc((size_t)n * n, sizeof *jobs);
    for (int c0 = 0; c0 < half; c0++)
        add_jobs(c0, mask);
    if (n & 1)
        add_jobs(half, (1u << half) - 1);
    pthread_t ids[256];
    unsigned long long totals[256] = {0};
    for (int t = 0; t < threads; t++)
        pthread_create(&ids[t], NULL, worker, &totals[t]);
    unsigned long long total = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        total += totals[t];
    }
    total *= 2;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("%d %llu %.6f\n", n, total, secs);
    free(jobs);
    return 0;
}
