// Streaming-read memory bandwidth: the ceiling for token generation, which
// reads every weight once per token. Decode tokens/s x model bytes should be
// compared with this number, not with a datasheet.
//
// Each thread sums its own contiguous slice of a buffer far larger than the
// last-level cache, with wide loads and several independent accumulators so
// the loop is bound by memory, not by add latency. The sum is printed so the
// compiler cannot drop the loads.
//
// build: cc -O2 -march=native -pthread tools/membw.c -o /tmp/membw
// usage: membw [THREADS=2] [MIB=1024] [RUNS=10]
// prints one line per run (GB/s, 1 GB = 1e9 bytes), then min/median/max.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

typedef struct {
    const uint8_t *base;
    size_t bytes;
    pthread_barrier_t *start;
    double sum;
    double cpu_s;           // this thread's CPU time for its read
    double wall0, wall1;    // its start and end on the monotonic clock
} slice_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// bytes must be a multiple of 128.
static double read_sum(const uint8_t *p, size_t bytes) {
#if defined(__AVX2__)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < bytes; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, a0);
    return (double)(lanes[0] + lanes[1] + lanes[2] + lanes[3]);
#else
    const uint64_t *q = (const uint64_t *)p;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i < bytes / 8; i += 4) {
        s0 += q[i]; s1 += q[i + 1]; s2 += q[i + 2]; s3 += q[i + 3];
    }
    return (double)(s0 + s1 + s2 + s3);
#endif
}

static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *worker(void *arg) {
    slice_t *s = arg;
    pthread_barrier_wait(s->start);
    s->wall0 = now_s();
    double c0 = thread_cpu_s();
    s->sum = read_sum(s->base, s->bytes);
    s->cpu_s = thread_cpu_s() - c0;
    s->wall1 = now_s();
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 1024;
    int runs = argc > 3 ? atoi(argv[3]) : 10;
    if (threads < 1 || mib < 1 || runs < 1) {
        fprintf(stderr, "usage: membw [THREADS=2] [MIB=1024] [RUNS=10]\n");
        return 2;
    }
    size_t slice = (mib << 20) / threads / 128 * 128;
    size_t total = slice * threads;
    uint8_t *buf = aligned_alloc(4096, total);
    if (!buf) { perror("aligned_alloc"); return 1; }
    // Touch every page (and make the data non-constant) before timing, so
    // page faults are not measured.
    for (size_t i = 0; i < total; i++) buf[i] = (uint8_t)(i * 2654435761u >> 24);

    double *gbs = malloc(sizeof(double) * runs);
    double check = 0;
    for (int r = 0; r < runs; r++) {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, threads + 1);
        pthread_t tid[threads];
        slice_t sl[threads];
        for (int t = 0; t < threads; t++) {
            sl[t] = (slice_t){buf + (size_t)t * slice, slice, &start, 0, 0, 0, 0};
            pthread_create(&tid[t], NULL, worker, &sl[t]);
        }
        // Workers are released together and time themselves: the span from
        // the first start to the last end (thread creation is outside it, and
        // a descheduled main thread cannot distort it).
        pthread_barrier_wait(&start);
        for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
        pthread_barrier_destroy(&start);
        double w0 = sl[0].wall0, w1 = sl[0].wall1;
        for (int t = 1; t < threads; t++) {
            if (sl[t].wall0 < w0) w0 = sl[t].wall0;
            if (sl[t].wall1 > w1) w1 = sl[t].wall1;
        }
        double dt = w1 - w0;
        // A thread that was descheduled (other jobs on the host) shows
        // cpu time < wall time; cpu% near 100 means the number is the
        // memory system's, not the scheduler's.
        double cpu = 0;
        for (int t = 0; t < threads; t++) { check += sl[t].sum; cpu += sl[t].cpu_s; }
        gbs[r] = total / dt / 1e9;
        printf("run %2d: %7.2f GB/s  (%zu MiB, %d threads, %.1f ms, cpu %3.0f%%)\n", r, gbs[r], total >> 20,
               threads, dt * 1e3, 100 * cpu / (threads * dt));
    }
    qsort(gbs, runs, sizeof(double), cmp_double);
    printf("read GB/s: min %.2f  median %.2f  max %.2f  (checksum %.0f)\n",
           gbs[0], gbs[runs / 2], gbs[runs - 1], check);
    free(gbs);
    free(buf);
    return 0;
}
