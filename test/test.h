/* test.h — the harness every test program uses.
 *
 * A test is a small C program that prints one line per check ("ok   ..." or "FAIL ...") and
 * closes with "N passed, N failed"; it exits 1 if any check failed. test/run collects the
 * closing lines of every program into one total for `make test`. A check of a loop over many
 * cases (every header byte, every truncation length) counts as one check and prints the
 * first failing case. GPU tests call test_skip() on a machine without a usable device. */
#ifndef TEST_H
#define TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int test_npass, test_nfail;

/* Record one check. name is printed either way; on failure, also where and why. */
static void test_check(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void test_check(int ok, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    printf(ok ? "ok   " : "FAIL ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (!ok)
        printf("  (%s:%d)", file, line);
    printf("\n");
    fflush(stdout);
    if (ok)
        test_npass++;
    else
        test_nfail++;
}

/* CHECK(cond, "name", args...): one check line. */
#define CHECK(cond, ...) test_check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* Print the closing line; return the process exit code. */
static inline int test_done(void)
{
    printf("%d passed, %d failed\n", test_npass, test_nfail);
    return test_nfail ? 1 : 0;
}

/* For a test that cannot run here (no GPU): one line, counted by test/run, exit 0. */
static inline int test_skip(const char *why)
{
    printf("skipped: %s\n", why);
    printf("%d passed, %d failed\n", test_npass, test_nfail);
    return test_nfail ? 1 : 0;
}

/* Deterministic PRNG for test inputs (splitmix64): fresh inputs per seed, same per run. */
static inline unsigned long long test_rand(unsigned long long *s)
{
    unsigned long long z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* malloc that ends the test with a FAIL line when memory runs out */
static inline void *test_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf("FAIL out of host memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Read a whole file into a malloc'd buffer (NUL-terminated), or exit with a message. */
static inline char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("FAIL cannot open %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        printf("FAIL cannot read %s\n", path);
        exit(1);
    }
    buf[n] = 0;
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

#endif
