/* test_trace.c — rt_trace's grouping of timeline records (rt_trace_group, rt/diag.c), on
 * records made up here: what a decode step's kernels write into KERN_TRACE=1 images
 * (kern/common.cuh), without a GPU. Checked: one op per launch in the order of the launches'
 * first waits, CTA counts from the wait records only, every span from the earliest and latest
 * stamp of its kind, times in microseconds from the step's earliest wait, NaN for stamps no CTA
 * made, launches with no CTA past its wait left out, and the cap refused with a message. */
#include <math.h>
#include <string.h>

#include "../rt/rt_impl.h"
#include "test.h"

/* a wait record: start (0 for none), enter, go in ns */
static struct rt_trace_rec wait_rec(uint64_t grid, uint32_t cta, uint64_t start, uint64_t enter, uint64_t go)
{
    return (struct rt_trace_rec){.grid = grid, .t_start = start, .t_enter = enter, .t_go = go, .cta = cta};
}

/* an end record: mark (0 for none) and end in ns */
static struct rt_trace_rec end_rec(uint64_t grid, uint32_t cta, uint64_t mark, uint64_t end)
{
    return (struct rt_trace_rec){.grid = grid, .t_mark = mark, .t_end = end, .cta = cta};
}

static int near(double a, double b) { return fabs(a - b) < 1e-9; }

int main(void)
{
    /* launch 40 (3 CTAs, starts and ends stamped), then 41 (2 CTAs, waits only), then 42 (end
     * records only: its CTAs left before the wait), then 43 (1 CTA, a mark and an end); the
     * records arrive in no order, as the atomic counter hands out slots */
    const uint64_t T = 5000000000ull; /* the global timer is far from 0 */
    struct rt_trace_rec rec[] = {
        wait_rec(41, 1, 0, T + 9000, T + 12000),     end_rec(40, 2, 0, T + 8000),
        wait_rec(40, 0, T + 100, T + 1000, T + 2000), wait_rec(43, 0, 0, T + 14000, T + 15000),
        end_rec(42, 0, 0, T + 13000),                 wait_rec(40, 2, T + 300, T + 1500, T + 2500),
        end_rec(43, 0, T + 15500, T + 16000),         wait_rec(40, 1, T + 200, T + 1200, T + 2200),
        wait_rec(41, 0, 0, T + 8500, T + 11000),      end_rec(40, 0, 0, T + 7000),
    };
    const uint32_t nrec = sizeof rec / sizeof rec[0];
    struct rt_trace_op out[8];
    uint32_t n = 99;
    char err[RT_ERR_LEN] = "";
    enum rt_status st = rt_trace_group(rec, nrec, out, 8, &n, err);
    CHECK(st == RT_OK && n == 3, "three launches with CTAs past their wait (the one without is left out): %u%s%s",
          n, st ? ": " : "", err);
    if (st != RT_OK || n != 3)
        return test_done();
    CHECK(out[0].ctas == 3 && out[1].ctas == 2 && out[2].ctas == 1,
          "CTA counts from the wait records only: %u %u %u", out[0].ctas, out[1].ctas, out[2].ctas);
    CHECK(near(out[0].enter, 0) && near(out[0].enter_last, 0.5) && near(out[0].go, 1.0) && near(out[0].go_last, 1.5),
          "first launch: waits entered 0 .. 0.5 us and returned 1.0 .. 1.5 us after the step's first wait "
          "(%.3f %.3f %.3f %.3f)", out[0].enter, out[0].enter_last, out[0].go, out[0].go_last);
    CHECK(near(out[0].start, -0.9) && near(out[0].start_last, -0.7) && near(out[0].end, 6.0) &&
              near(out[0].end_last, 7.0) && isnan(out[0].mark) && isnan(out[0].mark_last),
          "first launch: starts before the first wait (%.3f .. %.3f), ends %.3f .. %.3f us, no mark (%.0f)",
          out[0].start, out[0].start_last, out[0].end, out[0].end_last, out[0].mark);
    CHECK(near(out[1].enter, 7.5) && near(out[1].go_last, 11.0) && isnan(out[1].start) && isnan(out[1].end),
          "second launch: waits from 7.5 us, the last returning at 11 us, no start or end stamps (%.3f %.3f %.0f %.0f)",
          out[1].enter, out[1].go_last, out[1].start, out[1].end);
    CHECK(near(out[2].mark, 14.5) && near(out[2].end, 15.0) && near(out[2].go, 14.0),
          "third launch: its CTA's mark and end from the end record (%.3f %.3f)", out[2].mark, out[2].end);
    CHECK(!out[0].name && !out[0].kernel, "names are left to rt_trace");

    /* the same records with room for two launches */
    st = rt_trace_group(rec, nrec, out, 2, &n, err);
    CHECK(st == RT_ERR_ARG && strstr(err, "more than 2 launches"), "a timeline longer than the caller's table is "
          "refused: %s", err);

    /* no records with a wait: nothing */
    struct rt_trace_rec ends[] = {end_rec(7, 0, 0, T), end_rec(7, 1, 0, T + 5)};
    st = rt_trace_group(ends, 2, out, 8, &n, err);
    CHECK(st == RT_OK && n == 0, "end records alone make no launch (%u)", n);
    return test_done();
}
