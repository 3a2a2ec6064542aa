/* test_converter_cli.c — the converter program as a user runs it (build/converter).
 *
 * Exit status 0 for a written image (with progress and a summary on stderr, or nothing with
 * -q), 2 for bad arguments (each named), 1 for a failed conversion (the message names the
 * file and tensor, nothing is left at the output path). The program writes the same bytes
 * as the library call the other tests use. */
#include <sys/wait.h>

#include "fix_convert.h"

#define CONVERTER "build/converter"
#define FUSED     FX_FIXTURES "/tiny-a-fused"

static char scratch[] = "/tmp/qrt_converter_cli_XXXXXX";

/* Run a shell command, capture stderr+stdout into out; return the exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
    char full[2048];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    size_t n = p ? fread(out, 1, cap - 1, p) : 0;
    out[n] = 0;
    int st = p ? pclose(p) : -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

/* converter ARGS must exit with `want`, print `expect`, and leave no image. */
static void bad(const char *args, int want, const char *expect)
{
    char cmd[1024], out[4096], img[700];
    snprintf(img, sizeof img, "%s/bad.img", scratch);
    snprintf(cmd, sizeof cmd, CONVERTER " %s", args);
    int rc = run(cmd, out, sizeof out);
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = 0;
    CHECK(rc == want && strstr(out, expect) && fx_no_output(img),
          "converter %s: exit %d (want %d), message names '%s', no output: %s", args, rc, want,
          expect, out);
}

static void arguments(void)
{
    char out[4096], args[1024];
    int rc = run(CONVERTER " --help", out, sizeof out);
    const char *flags[] = {"--in DIR",  "--out IMAGE", "--quant", "--lm-head", "--config",
                           "--threads", "-v",          "-q",      "--help",    "Exit status"};
    int all = rc == 0;
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        all = all && strstr(out, flags[i]);
    CHECK(all, "converter --help exits 0 and lists every flag");
    bad("", 2, "--in DIR is required");
    snprintf(args, sizeof args, "--in " FUSED " --quant int4:32");
    bad(args, 2, "--out IMAGE is required");
    snprintf(args, sizeof args, "--in " FUSED " --out %s/bad.img --bogus", scratch);
    bad(args, 2, "unknown option --bogus");
    snprintf(args, sizeof args, "--in " FUSED " --out %s/bad.img --quant int5", scratch);
    bad(args, 2, "--quant int5: expected bf16, int4, int4:32, int4:64 or int4:128");
    snprintf(args, sizeof args, "--in " FUSED " --out %s/bad.img --lm-head int4:48", scratch);
    bad(args, 2, "--lm-head int4:48: expected");
    snprintf(args, sizeof args, "--in " FUSED " --out %s/bad.img --threads 0", scratch);
    bad(args, 2, "--threads 0: expected 1..64");
    snprintf(args, sizeof args, "--in " FUSED " --out %s/bad.img --quant int4:32 --lm-head int4:64",
             scratch);
    bad(args, 2, "different INT4 group sizes");
    snprintf(args, sizeof args, "--out %s/bad.img --in", scratch);
    bad(args, 2, "--in needs a value");
}

static void failures(void)
{
    char args[1024];
    snprintf(args, sizeof args, "--in %s/nowhere --out %s/bad.img -q", scratch, scratch);
    bad(args, 1, "nowhere/config.json: cannot open");
    snprintf(args, sizeof args, "--in " FX_FIXTURES "/tiny-a --out %s/bad.img", scratch);
    bad(args, 1,
        "layers.0.mlp.experts.down_proj: input width 64 is not a multiple of the INT4 "
        "group size 128");
    snprintf(args, sizeof args, "--in " FUSED " --out %s/no-dir/bad.img --quant bf16", scratch);
    bad(args, 1, "no-dir/bad.img.tmp: No such file or directory");
}

static void good_runs(void)
{
    char cmd[1024], out[8192], img[700], lib[700], err[WT_CONV_ERR_LEN];
    snprintf(img, sizeof img, "%s/a.img", scratch);
    snprintf(cmd, sizeof cmd, CONVERTER " --in " FUSED " --out %s --quant int4:32", img);
    int rc = run(cmd, out, sizeof out);
    const char *want[] = {"[72/72] lm_head.weight",
                          "MB/s",
                          "ETA",
                          "reconstruction error",
                          "experts",
                          "GDN projections",
                          "attention projections",
                          "shared expert",
                          "wrote",
                          "int4:32, lm_head bf16, 72 tensors",
                          "peak RSS"};
    int all = rc == 0 && fx_exists(img);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        all = all && strstr(out, want[i]);
    CHECK(all,
          "converter --quant int4:32 writes the image, shows progress and the error per "
          "tensor class%s%s",
          all ? "" : ": ", all ? "" : out);
    snprintf(lib, sizeof lib, "%s/lib.img", scratch);
    rc = fx_convert(FUSED, lib, "int4:32", 0, err);
    CHECK(rc == 0 && fx_same_bytes(img, lib), "the program writes the bytes of the library call");
    snprintf(cmd, sizeof cmd, CONVERTER " --in " FUSED " --out %s --quant bf16 -q --threads 3",
             img);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0 && out[0] == 0 && fx_exists(img), "-q: exit 0 and not a byte of output");
    snprintf(cmd, sizeof cmd, CONVERTER " --in " FUSED " --out %s --quant int4:32 -v", img);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "layers.2.mlp.experts.gate_up_proj") &&
              strstr(out, "int4  rel RMS error 8.") && strstr(out, "A_log") &&
              strstr(out, "f32   rel RMS error 0.000e+00"),
          "-v adds the error of every tensor");
    snprintf(cmd, sizeof cmd,
             CONVERTER " --in " FUSED " --config " FX_FIXTURES "/tiny-a/config.json --out %s "
                       "--quant int4:64 --lm-head int4",
             img);
    rc = run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "int4:64, lm_head int4:64"),
          "--config FILE, and --lm-head int4 takes the group of --quant");
}

int main(void)
{
    if (access(CONVERTER, X_OK)) {
        CHECK(0, "%s exists (run make first)", CONVERTER);
        return test_done();
    }
    fx_mkdtemp(scratch);
    arguments();
    failures();
    good_runs();
    fx_rm_tree(scratch);
    return test_done();
}
