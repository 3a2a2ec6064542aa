/* test_rt_nodriver.c — rt on a machine without the CUDA driver: rt_open must return
 * RT_ERR_NO_DRIVER with a message that says so and release everything; the binary itself links
 * no CUDA library, so it starts at all (no dynamic-loader failure). On a machine with a driver
 * this test has nothing to check and says so. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "../rt/rt.h"
#include "test.h"

int main(void)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib) {
        dlclose(lib);
        return test_skip("a CUDA driver is present (this test covers machines without one)");
    }
    struct rt *r = (struct rt *)1;
    char err[RT_ERR_LEN] = "";
    /* a valid plan (the plan is read before the driver is opened) */
    int made = system("build/planner -q --config test/data/config/tiny-a.json --quant bf16 "
                      "--max-seq 64 -o build/test/nodriver_plan.bin") == 0;
    CHECK(made, "the planner writes a tiny plan");
    struct rt_options o = {.plan_path = "build/test/nodriver_plan.bin", .synthetic = 1};
    enum rt_status st = rt_open(&r, &o, err);
    CHECK(r == NULL && st == RT_ERR_NO_DRIVER && strstr(err, "no CUDA driver"),
          "rt_open says there is no driver and returns no handle: %s (%s)", rt_status_name(st), err);
    o.plan_path = NULL;
    st = rt_open(&r, &o, err);
    CHECK(st == RT_ERR_ARG && r == NULL, "rt_open without a plan is a bad argument: %s", err);
    /* the driver itself: the loader of rt reports it by name */
    struct rt_cudrv d;
    int n = -1;
    int rc = rt_cudrv_probe(&d, &n, err);
    CHECK(rc != 0 && strstr(err, "libcuda.so.1"), "the driver probe names the missing library: %s", err);
    CHECK(!rt_status_restartable(RT_ERR_NO_DRIVER) && !rt_status_restartable(RT_ERR_PLAN) &&
              rt_status_restartable(RT_ERR_CUDA),
          "a missing driver or a bad plan is not restartable; a lost context is");
    return test_done();
}
