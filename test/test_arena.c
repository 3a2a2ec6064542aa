/* test_arena.c — greedy-by-size placement by lifetime, and its verifier (plan/arena.h).
 *
 * Exact offsets on hand-worked cases, the verifier catching deliberately bad layouts, and a
 * randomized property check: every placement of random lifetimes verifies, never exceeds the
 * naive sum, and is never below the peak of simultaneously live bytes. */
#include <string.h>

#include "../plan/arena.h"
#include "test.h"

static void hand_cases(void)
{
    /* A 0..1, B 1..2, C 2..3, D 0..3: A and C share bytes, B goes above them, D above B */
    struct plan_arena_buf b[] = {
        {"A", 100, 0, 1, 0}, {"B", 50, 1, 2, 0}, {"C", 100, 2, 3, 0}, {"D", 30, 0, 3, 0}};
    char err[PLAN_ARENA_ERR_LEN];
    uint64_t t = plan_arena_place(b, 4, 1);
    CHECK(b[0].offset == 0 && b[2].offset == 0 && b[1].offset == 100 && b[3].offset == 150 &&
              t == 180,
          "align 1: A@0 C@0 B@100 D@150 total 180 (got %llu %llu %llu %llu total %llu)",
          (unsigned long long)b[0].offset, (unsigned long long)b[2].offset,
          (unsigned long long)b[1].offset, (unsigned long long)b[3].offset, (unsigned long long)t);
    CHECK(plan_arena_naive(b, 4, 1) == 280, "naive sum 280");
    CHECK(plan_arena_verify(b, 4, 1, t, err) == 0, "the placement verifies");

    t = plan_arena_place(b, 4, 16);
    CHECK(b[1].offset == 112 && b[3].offset == 176 && t == 208,
          "align 16: B@112 D@176 total 208 (got %llu %llu total %llu)",
          (unsigned long long)b[1].offset, (unsigned long long)b[3].offset, (unsigned long long)t);

    /* a gap left by a dead buffer is reused: E 0..0 (64), F 1..1 (64) share offset 0 with
     * each other while G 0..1 (200) sits first as the largest */
    struct plan_arena_buf g[] = {{"E", 64, 0, 0, 0}, {"F", 64, 1, 1, 0}, {"G", 200, 0, 1, 0}};
    t = plan_arena_place(g, 3, 64);
    CHECK(g[2].offset == 0 && g[0].offset == 256 && g[1].offset == 256 && t == 320,
          "dead gap reused: G@0 E@256 F@256 total 320 (got %llu %llu %llu total %llu)",
          (unsigned long long)g[2].offset, (unsigned long long)g[0].offset,
          (unsigned long long)g[1].offset, (unsigned long long)t);

    /* a hole between two live buffers is used when it fits */
    struct plan_arena_buf h[] = {{"big0", 100, 0, 0, 0}, {"big1", 100, 0, 2, 0},
                                 {"mid", 90, 1, 2, 0},   {"small", 50, 2, 2, 0}};
    t = plan_arena_place(h, 4, 1);
    /* big0@0, big1@100, mid (1..2) meets big1 only -> @0; small (2) meets mid and big1 -> @200 */
    CHECK(h[0].offset == 0 && h[1].offset == 100 && h[2].offset == 0 && h[3].offset == 200 &&
              t == 250,
          "first fit: big0@0 big1@100 mid@0 small@200 total 250 (got %llu %llu %llu %llu, %llu)",
          (unsigned long long)h[0].offset, (unsigned long long)h[1].offset,
          (unsigned long long)h[2].offset, (unsigned long long)h[3].offset, (unsigned long long)t);
}

static void verifier_catches(void)
{
    char err[PLAN_ARENA_ERR_LEN];
    struct plan_arena_buf b[] = {{"x", 100, 0, 2, 0}, {"y", 100, 2, 3, 50}};
    CHECK(plan_arena_verify(b, 2, 1, 200, err) != 0 && strstr(err, "x") && strstr(err, "y"),
          "overlapping live buffers are refused, both named: %s", err);
    b[1].first = 3;
    CHECK(plan_arena_verify(b, 2, 1, 200, err) == 0, "same bytes, disjoint lifetimes pass");
    b[1].offset = 51;
    CHECK(plan_arena_verify(b, 2, 16, 200, err) != 0 && strstr(err, "misaligned"),
          "misaligned offset is refused");
    b[1].offset = 160;
    CHECK(plan_arena_verify(b, 2, 16, 200, err) != 0 && strstr(err, "outside"),
          "buffer past the arena end is refused");
    b[1].offset = 0, b[1].size = 0;
    CHECK(plan_arena_verify(b, 2, 16, 200, err) != 0, "empty buffer is refused");
    b[1].size = 10, b[1].first = 5, b[1].last = 4;
    CHECK(plan_arena_verify(b, 2, 16, 200, err) != 0, "inverted lifetime is refused");
    b[1].offset = UINT64_MAX - 5, b[1].first = 0, b[1].last = 0;
    CHECK(plan_arena_verify(b, 2, 1, 200, err) != 0, "offset near 2^64 does not wrap the check");
}

static void random_lifetimes(void)
{
    unsigned long long s = 42;
    int ok = 1, bounded = 1, tight = 1;
    char err[PLAN_ARENA_ERR_LEN] = "";
    for (int trial = 0; trial < 300 && ok && bounded && tight; trial++) {
        uint32_t n = 1 + (uint32_t)(test_rand(&s) % 60), ops = 1 + (uint32_t)(test_rand(&s) % 40);
        struct plan_arena_buf b[64];
        for (uint32_t i = 0; i < n; i++) {
            uint32_t a = (uint32_t)(test_rand(&s) % ops), c = (uint32_t)(test_rand(&s) % ops);
            b[i] = (struct plan_arena_buf){"r", 1 + test_rand(&s) % 5000, a < c ? a : c,
                                           a < c ? c : a, 0};
        }
        uint64_t t = plan_arena_place(b, n, 256);
        ok = plan_arena_verify(b, n, 256, t, err) == 0;
        bounded = t <= plan_arena_naive(b, n, 256);
        for (uint32_t op = 0; op < ops; op++) { /* peak live bytes is a lower bound */
            uint64_t live = 0;
            for (uint32_t i = 0; i < n; i++)
                live += (b[i].first <= op && op <= b[i].last) ? b[i].size : 0;
            tight &= live <= t;
        }
    }
    CHECK(ok, "300 random placements verify%s%s", ok ? "" : ": ", ok ? "" : err);
    CHECK(bounded, "placements never exceed the naive sum");
    CHECK(tight, "placements are never below the peak of live bytes");
    /* deterministic: the same input gives the same offsets */
    struct plan_arena_buf a1[] = {{"p", 10, 0, 1, 0}, {"q", 10, 0, 1, 0}, {"r", 10, 1, 2, 0}};
    struct plan_arena_buf a2[3];
    memcpy(a2, a1, sizeof a1);
    plan_arena_place(a1, 3, 1);
    plan_arena_place(a2, 3, 1);
    CHECK(!memcmp(a1, a2, sizeof a1) && a1[0].offset == 0 && a1[1].offset == 10,
          "ties break by first use then index, deterministically");
}

int main(void)
{
    hand_cases();
    verifier_catches();
    random_lifetimes();
    return test_done();
}
