/* converter.c — the `converter` program: a Hugging Face checkpoint to a weights image.
 *
 *   converter --in DIR --out IMAGE [--quant Q] [--lm-head Q] [--config FILE] [--threads N]
 *             [-v] [-q] [--help]
 *
 * The defaults (int4 with group 128, bf16 lm_head) are the planner's, so `planner` and
 * `converter` run with default flags make a matching pair (same manifest hash). The work is
 * wt_convert() (weights/convert.h); this file parses arguments, turns SIGINT/SIGTERM into a
 * clean stop (the unfinished image is removed), and prints the summary: reconstruction
 * error per tensor class (per tensor with -v), size, speed and peak memory.
 *
 * Exit status: 0 written, 1 the conversion failed (nothing at IMAGE), 2 bad arguments. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "weights/convert.h"

static volatile sig_atomic_t cancelled;

static void on_signal(int sig)
{
    (void)sig;
    cancelled = 1;
}

static void usage(FILE *f)
{
    fprintf(
        f, "usage: converter --in DIR --out IMAGE [options]\n"
           "\n"
           "Converts the Hugging Face checkpoint in DIR (config.json plus model.safetensors or\n"
           "shards listed by model.safetensors.index.json) into the weights image IMAGE.\n"
           "  --in DIR         checkpoint directory\n"
           "  --out IMAGE      image to write (atomically: nothing appears there on failure)\n"
           "  --quant Q        projections and experts: bf16, int4 (group 128), int4:32,\n"
           "                   int4:64, int4:128 (default int4:128, as the planner)\n"
           "  --lm-head Q      lm_head: bf16 (default) or int4[:G] (the group of --quant if int4)\n"
           "  --config FILE    config.json to use instead of DIR/config.json\n"
           "  --threads N      quantization threads (default: CPUs, at most 16)\n"
           "  -v               also the reconstruction error of every tensor\n"
           "  -q               no progress and no summary\n"
           "  --help           this text\n"
           "Exit status: 0 written, 1 conversion failed, 2 bad arguments.\n");
}

static int bad(const char *fmt, const char *arg)
{
    fprintf(stderr, "converter: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see --help)\n");
    return 2;
}

static int parse_args(int argc, char **argv, struct wt_conv_opts *o, int *quiet, int *verbose)
{
    uint32_t lm_group = 0, q_group = 128, g;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(stdout), 1;
        if (!strcmp(a, "-q") || !strcmp(a, "-v")) {
            *(a[1] == 'q' ? quiet : verbose) = 1;
            continue;
        }
        if (strcmp(a, "--in") && strcmp(a, "--out") && strcmp(a, "--quant") &&
            strcmp(a, "--lm-head") && strcmp(a, "--config") && strcmp(a, "--threads"))
            return bad("unknown option %s", a);
        if (!v)
            return bad("%s needs a value", a);
        i++;
        if (!strcmp(a, "--in"))
            o->in_dir = v;
        else if (!strcmp(a, "--out"))
            o->out = v;
        else if (!strcmp(a, "--config"))
            o->config = v;
        else if (!strcmp(a, "--quant") && wt_format_parse(v, &o->fmt.quant, &g) == 0)
            q_group = g ? g : 128;
        else if (!strcmp(a, "--lm-head") &&
                 wt_format_parse_lm_head(v, &o->fmt.lm_head_quant, &lm_group) == 0)
            ;
        else if (!strcmp(a, "--threads")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > WT_CONV_MAX_THREADS)
                return bad("--threads %s: expected 1..64", v);
            o->threads = (uint32_t)n;
        } else
            return bad(!strcmp(a, "--quant") ? "--quant %s: expected bf16, int4, int4:32, int4:64 "
                                               "or int4:128"
                                             : "--lm-head %s: expected bf16, int4 or int4:G",
                       v);
    }
    if (!o->in_dir || !o->out)
        return bad("%s", !o->in_dir ? "--in DIR is required" : "--out IMAGE is required");
    if (wt_format_resolve(&o->fmt, q_group, lm_group))
        return bad("%s", "--quant and --lm-head name different INT4 group sizes; one group "
                         "size serves both");
    return 0;
}

static void summary(const struct wt_conv_opts *o, const struct wt_conv_result *r)
{
    struct rusage ru;
    char q[32], l[32];
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr, "reconstruction error (relative RMS, ||W - stored|| / ||W||):\n");
    for (int c = 0; c < WT_Q_NCLASSES; c++)
        if (r->err.elems[c])
            fprintf(stderr, "  %-22s %10.3e  (%.1f M weights)\n", wt_q_class_name(c),
                    wt_q_rel_rms(&r->err, c), (double)r->err.elems[c] / 1e6);
    fprintf(stderr,
            "wrote %s: %s, lm_head %s, %u tensors (%u checkpoint tensors skipped), %.1f MiB from "
            "%.1f MiB in %.1f s (%.0f MB/s), peak RSS %.1f MiB\n",
            o->out, wt_format_name(o->fmt.quant, o->fmt.group_size, q, sizeof q),
            wt_format_name(o->fmt.lm_head_quant, o->fmt.group_size, l, sizeof l), r->tensors,
            r->skipped, (double)r->bytes_out / 1048576.0, (double)r->bytes_in / 1048576.0,
            r->seconds, r->seconds > 0 ? (double)r->bytes_in / r->seconds / 1e6 : 0.0,
            (double)ru.ru_maxrss / 1024.0);
}

int main(int argc, char **argv)
{
    struct wt_conv_opts o = {.fmt = {PLAN_QUANT_INT4, 128, PLAN_QUANT_BF16}, .cancel = &cancelled};
    struct wt_conv_result r;
    char err[WT_CONV_ERR_LEN];
    int quiet = 0, verbose = 0;
    int rc = parse_args(argc, argv, &o, &quiet, &verbose);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (!quiet)
        o.progress = stderr;
    if (verbose && !quiet)
        o.per_tensor = stderr;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (wt_convert(&o, &r, err)) {
        fprintf(stderr, "converter: %s\n", err);
        return 1;
    }
    if (!quiet)
        summary(&o, &r);
    return 0;
}
