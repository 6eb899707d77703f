/* Latency samples and CPU clocks.
 *
 * Latencies are kept whole (8 bytes each) and sorted once at the end, so the
 * percentiles are exact: a few million samples cost a few tens of megabytes,
 * which a benchmark run can afford, and no bucketing error creeps in.
 */
#include "loadgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

void samples_add(samples_t *s, uint64_t ns) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 65536;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) fail("out of memory for latency samples");
    }
    s->v[s->n++] = ns;
    s->sorted = 0;
}

void samples_clear(samples_t *s) { s->n = 0; }

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile: the smallest sample with at least p % of them at or below it. */
double samples_pct_us(samples_t *s, double p) {
    if (s->n == 0) return 0.0;
    if (!s->sorted) {
        qsort(s->v, s->n, sizeof *s->v, compare);
        s->sorted = 1;
    }
    double exact = p / 100.0 * (double)s->n;
    size_t rank = (size_t)exact;
    if ((double)rank < exact) rank++;
    if (rank < 1) rank = 1;
    if (rank > s->n) rank = s->n;
    return (double)s->v[rank - 1] / 1000.0;
}

void print_latency(samples_t *s) {
    double sum = 0;
    for (size_t i = 0; i < s->n; i++) sum += (double)s->v[i];
    json_num("mean_us", s->n ? sum / (double)s->n / 1000.0 : 0.0);
    json_num("p50_us", samples_pct_us(s, 50));
    json_num("p90_us", samples_pct_us(s, 90));
    json_num("p99_us", samples_pct_us(s, 99));
    json_num("max_us", samples_pct_us(s, 100));
}

double self_cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/* Another process's CPU time (all its threads, user + system) with nanosecond
 * resolution, from its CPU-time clock; /proc/PID/stat would give 10 ms ticks. */
double process_cpu_s(pid_t pid) {
    clockid_t clock;
    struct timespec ts;
    if (pid <= 0 || clock_getcpuclockid(pid, &clock) != 0 || clock_gettime(clock, &ts) != 0)
        return -1.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
