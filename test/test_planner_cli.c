/* test_planner_cli.c — the planner program as a user runs it (build/planner).
 *
 * Good runs: the default plan to a file and to a pipe, byte-identical between runs, accepted
 * by --verify, well under a second. Bad input: each case must exit non-zero, print a message
 * that names the problem, and leave no output file behind. A terminal on standard output is
 * refused (tested through a pseudo-terminal). */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define PLANNER "build/planner"
#define TMP "build/test/planner_cli"

/* Run a shell command, capture stderr+stdout into out; return the exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
    char full[1024];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    size_t n = p ? fread(out, 1, cap - 1, p) : 0;
    out[n] = 0;
    int st = p ? pclose(p) : -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void bad(const char *args, const char *expect)
{
    char cmd[512], out[4096];
    remove(TMP "/bad.bin");
    snprintf(cmd, sizeof cmd, PLANNER " -o " TMP "/bad.bin %s", args);
    int rc = run(cmd, out, sizeof out);
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = 0;
    CHECK(rc != 0 && strstr(out, expect) && !exists(TMP "/bad.bin") && !exists(TMP "/bad.bin.tmp"),
          "planner %s: exit %d, message names '%s', no output: %s", args, rc, expect, out);
}

/* the prefill schedules the planner's summary lists, in order, against a list like "16 64" */
static int buckets_are(const char *summary, const char *want)
{
    char got[256] = "";
    size_t n = 0;
    for (const char *q = summary; (q = strstr(q, "schedule prefill_")) != NULL && n < sizeof got - 16;) {
        q += strlen("schedule prefill_");
        n += (size_t)snprintf(got + n, sizeof got - n, "%s%u", n ? " " : "", (unsigned)strtoul(q, NULL, 10));
    }
    if (strcmp(got, want))
        printf("# prefill buckets: %s, want %s\n", got, want);
    return !strcmp(got, want);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void good_runs(void)
{
    char out[8192];
    double t0 = now();
    int rc = run(PLANNER " --max-seq 4096 -o " TMP "/a.bin", out, sizeof out);
    double dt = now() - t0;
    CHECK(rc == 0 && exists(TMP "/a.bin"), "planner --max-seq 4096 -o FILE succeeds");
    CHECK(dt < 1.0, "the default plan takes %.3f s (well under a second)", dt);
    CHECK(strstr(out, "arena") && strstr(out, "overlay placed by lifetime"),
          "the summary shows the arena and the saving against the naive sum");
    CHECK(buckets_are(out, "16 64 128 256 512 768 1024 1536 2048 3072 4096"),
          "default prefill buckets: 16, 64, the powers of two, 1.5 times those from 512, the "
          "4096 chunk");
    rc = run(PLANNER " --max-seq 4096 --prefill-chunk 300 -o " TMP "/e.bin", out, sizeof out);
    CHECK(rc == 0 && buckets_are(out, "16 64 128 256 300"),
          "--prefill-chunk 300: 16, 64, 128, 256, 300");
    rc = run(PLANNER " --max-seq 1000 -o " TMP "/e.bin", out, sizeof out);
    CHECK(rc == 0 && buckets_are(out, "16 64 128 256 512 768 1000"),
          "--max-seq 1000: the chunk capped at 1000, the ladder below it");
    rc = run(PLANNER " --max-seq 4096 -q > " TMP "/b.bin", out, sizeof out);
    CHECK(rc == 0, "planner --max-seq 4096 > plan.bin succeeds");
    rc = run("cmp " TMP "/a.bin " TMP "/b.bin", out, sizeof out);
    CHECK(rc == 0, "two runs give byte-identical files");
    rc = run(PLANNER " --verify " TMP "/a.bin", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "valid plan"), "planner --verify accepts it");
    rc = run(PLANNER " --help", out, sizeof out);
    const char *flags[] = {"--max-seq", "--config", "--quant", "--lm-head", "--prefill-chunk",
                           "--arch", "--kern-dir", "--split-threshold", "--splits", "--moe-decode",
                           "--device-mem", "-o FILE", "--verify", "--help"};
    int all = rc == 0;
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        all &= strstr(out, flags[i]) != NULL;
    CHECK(all, "--help exits 0 and lists every flag");
    rc = run(PLANNER " -q --max-seq 4096 --arch sm_90a --quant bf16 -o " TMP "/c.bin && " PLANNER
                     " --verify " TMP "/c.bin",
             out, sizeof out);
    CHECK(rc == 0 && strstr(out, "sm_90a") && !strstr(out, "sm_80"),
          "--arch sm_90a embeds only that image");
    /* a damaged plan is refused by --verify */
    rc = run("cp " TMP "/a.bin " TMP "/d.bin && printf 'x' | dd of=" TMP
             "/d.bin bs=1 seek=5000 conv=notrunc 2>/dev/null && " PLANNER " --verify " TMP "/d.bin",
             out, sizeof out);
    CHECK(rc != 0 && strstr(out, "not a valid plan"), "--verify refuses a damaged file: %.120s", out);
}

/* stdout on a pseudo-terminal: the planner must refuse to write binary there */
static void terminal_refused(void)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) || unlockpt(m)) {
        CHECK(0, "a pseudo-terminal can be opened");
        return;
    }
    const char *slave = ptsname(m);
    pid_t pid = fork();
    if (pid == 0) {
        int s = open(slave, O_RDWR);
        dup2(s, STDOUT_FILENO);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, STDERR_FILENO);
        execl(PLANNER, PLANNER, "--max-seq", "64", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    char drain[4096];
    /* drain the master so a misbehaving planner cannot block on a full terminal */
    fcntl(m, F_SETFL, O_NONBLOCK);
    ssize_t got = 0, r;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if ((r = read(m, drain, sizeof drain)) > 0)
            got += r;
        usleep(1000);
    }
    close(m);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0 && got == 0,
          "stdout on a terminal: refused, nothing written (exit %d, %zd bytes)",
          WIFEXITED(st) ? WEXITSTATUS(st) : -1, got);
}

int main(void)
{
    if (!exists(PLANNER)) {
        printf("FAIL %s is missing: run make first\n", PLANNER);
        return 1;
    }
    mkdir(TMP, 0755);
    good_runs();
    terminal_refused();
    bad("--max-seq 0", "--max-seq 0");
    bad("--max-seq -5", "--max-seq -5");
    bad("--max-seq abc", "--max-seq abc");
    bad("--max-seq 4096x", "--max-seq 4096x");
    bad("--max-seq 300000", "max_position_embeddings");
    bad("--max-seq", "needs a value");
    bad("--quant int3", "--quant int3");
    bad("--arch sm_75", "--arch sm_75");
    bad("--prefill-chunk 0", "--prefill-chunk 0");
    bad("--frobnicate 1", "unknown option");
    bad("--moe-decode one", "--moe-decode one: expected pair or fused");
    bad("--config /nonexistent/config.json", "/nonexistent/config.json");
    bad("--config test/data/config/qwen3.5-35b-a3b.json --device-mem 4G", "--device-mem");
    bad("--kern-dir /nonexistent", "kernel image");
    /* configs the kernels cannot serve */
    run("sed -e 's/\"num_experts_per_tok\": 8/\"num_experts_per_tok\": 32/'"
        " test/data/config/qwen3.5-35b-a3b.json > " TMP "/k32.json", (char[8]){0}, 8);
    bad("--config " TMP "/k32.json", "num_experts_per_tok");
    bad("--config test/data/config/tiny-a.json --quant int4:128 --max-seq 256", "INT4 group");
    /* the output directory does not exist: clean error, nothing written */
    char out[1024];
    int rc = run(PLANNER " -o /nonexistent/dir/plan.bin", out, sizeof out);
    CHECK(rc != 0 && strstr(out, "/nonexistent/dir/plan.bin"),
          "-o into a missing directory fails naming the path");
    return test_done();
}
