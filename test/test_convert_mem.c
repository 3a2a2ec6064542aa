/* test_convert_mem.c — the converter's peak memory does not grow with the checkpoint.
 *
 * build/mkmodel writes wide-2l (every width of Qwen3.5-35B-A3B, 2 layers, 523 MiB) and
 * wide-8l (the same widths, 8 layers, 1509 MiB); build/converter turns each into an
 * int4:128 image as a child process, and wait4() reports the child's peak RSS. Tensors have
 * the same shapes in both, so the converter, which holds one row block per thread and one
 * tensor's INT4 scales, must peak at the same RSS for 2.9x the data. Measured on a 2-CPU
 * machine: 5.6 MiB (wide-2l, 497 MB/s) and 5.9 MiB (wide-8l, 522 MB/s).
 *
 * The same scratch checkpoints check two more things that need full widths: `planner` and
 * `converter` with default flags make a matching pair (equal manifest hashes: int4:128 needs
 * every input width to be a multiple of 128, which no tiny model has), and SIGINT during a
 * conversion stops it with exit status 1 and nothing at the output path.
 *
 * Needs the built programs (make) and about 2.7 GB of scratch space under build/test; takes
 * about 25 s. */
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "fix_convert.h"
#include "plan/planfile.h"

static char scratch[] = "build/test/convert_mem_XXXXXX";

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Run argv as a child with stdout and stderr discarded; optionally SIGINT it after
 * `interrupt` seconds. Returns its exit status (or 128 + signal), its peak RSS in KiB. */
static int spawn(char *const argv[], long *maxrss_kb, double interrupt)
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1), dup2(null, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    if (interrupt > 0) {
        struct timespec t = {(time_t)interrupt,
                             (long)((interrupt - (double)(time_t)interrupt) * 1e9)};
        nanosleep(&t, NULL);
        kill(pid, SIGINT);
    }
    int st = 0;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &st, 0, &ru) != pid)
        return -1;
    if (maxrss_kb)
        *maxrss_kb = ru.ru_maxrss;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Generate model `name`, convert it to int4:128; returns peak RSS in KiB or -1. */
static long convert_measured(const char *name)
{
    char dir[300], img[320], st[320];
    long rss = -1;
    snprintf(dir, sizeof dir, "%s/%s", scratch, name);
    snprintf(img, sizeof img, "%s/%s.img", scratch, name);
    char *gen[] = {"build/mkmodel", "--config", (char *)name, "--seed", "1", "--out", dir, NULL};
    int rc = spawn(gen, NULL, 0);
    CHECK(rc == 0, "%s: build/mkmodel writes the checkpoint (exit %d)", name, rc);
    if (rc)
        return -1;
    snprintf(st, sizeof st, "%s/model.safetensors", dir);
    char *conv[] = {"build/converter", "--in", dir, "--out", img, "-q", NULL};
    double t0 = now();
    rc = spawn(conv, &rss, 0);
    double dt = now() - t0;
    CHECK(rc == 0 && fx_exists(img),
          "%s: converts to int4:128: %.0f MiB of checkpoint in %.2f s (%.0f MB/s), peak RSS "
          "%.1f MiB",
          name, (double)file_size(st) / 1048576.0, dt, (double)file_size(st) / dt / 1e6,
          (double)rss / 1024.0);
    return rc == 0 ? rss : -1;
}

/* planner --config wide-2l/config.json with defaults matches the default image. */
static void matching_pair(void)
{
    char cfg[320], plan[320], img[320], err[FMT_ERR_LEN];
    snprintf(cfg, sizeof cfg, "%s/wide-2l/config.json", scratch);
    snprintf(plan, sizeof plan, "%s/plan.bin", scratch);
    snprintf(img, sizeof img, "%s/wide-2l.img", scratch);
    char *argv[] = {"build/planner", "--config", cfg, "-q", "-o", plan, NULL};
    int rc = spawn(argv, NULL, 0);
    struct plan_view p;
    struct ref_image im;
    size_t len = 0;
    char *buf = rc == 0 ? test_read_file(plan, &len) : NULL;
    int ok = buf && plan_read(&p, buf, len, err) == FMT_OK && !ref_image_open(&im, img, err);
    if (ok) {
        ok = p.id.manifest_hash == wt_manifest_hash(&im.v);
        ref_image_close(&im);
    }
    CHECK(ok,
          "planner and converter with default flags make a matching pair (same manifest "
          "hash) on wide-2l (planner exit %d)",
          rc);
    free(buf);
}

static void interrupted(void)
{
    char dir[300], img[320];
    snprintf(dir, sizeof dir, "%s/wide-8l", scratch);
    snprintf(img, sizeof img, "%s/interrupted.img", scratch);
    char *argv[] = {"build/converter", "--in", dir, "--out", img, "--threads", "1", NULL};
    int rc = spawn(argv, NULL, 0.3);
    CHECK(rc == 1 && fx_no_output(img),
          "SIGINT during a conversion: exit 1 (got %d), nothing at the output path", rc);
}

int main(void)
{
    const char *progs[] = {"build/mkmodel", "build/converter", "build/planner"};
    for (int i = 0; i < 3; i++)
        if (access(progs[i], X_OK)) {
            CHECK(0, "%s exists (run make first)", progs[i]);
            return test_done();
        }
    fx_mkdtemp(scratch);
    long small = convert_measured("wide-2l"), big = convert_measured("wide-8l");
    CHECK(small > 0 && big > 0 && big <= small + small / 10 + 2048 && big < 128 * 1024,
          "peak RSS does not grow with the checkpoint: %.1f MiB for 2.9x the data of wide-2l's "
          "%.1f MiB (bound: +10%% + 2 MiB, and under 128 MiB)",
          (double)big / 1024.0, (double)small / 1024.0);
    matching_pair();
    interrupted();
    fx_rm_tree(scratch);
    return test_done();
}
