/* mkmodel.c — write a random Qwen3.5-MoE checkpoint of a built-in shape, in Hugging Face layout.
 *
 *   mkmodel --config NAME --seed N --out DIR [--per-expert] [--all-bf16]
 *   mkmodel --list
 *   mkmodel --help
 *
 * Why: the converter, the CPU reference and the GPU runtime need checkpoints of shapes other
 * than the one transformers fixture, and transformers needs the same files to produce golden
 * logits for them (tools/golden.py). The files are what the hub checkpoints look like
 * (config.json with text_config and vision_config; model.safetensors with
 * model.language_model.*, lm_head.weight, fused experts, F32 A_log and gated norm weight,
 * model.visual.*, mtp.*); --per-expert writes the experts one tensor each as
 * save_pretrained does, and --all-bf16 stores A_log and the gated norm weight in BF16 as it
 * also does. The same seed gives the same bytes.
 *
 * The generator is test/ref/mkmodel_gen.c, shared with the tests. Exit status: 0 written,
 * 1 generation or write failed (nothing is left in DIR), 2 bad usage. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/ref/mkmodel_gen.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mkmodel --config NAME --seed N --out DIR [--per-expert] [--all-bf16]\n"
            "       mkmodel --list | --help\n"
            "\n"
            "Writes DIR/config.json and DIR/model.safetensors: a random Qwen3.5-MoE checkpoint\n"
            "of the built-in configuration NAME, deterministic from the seed N (default 0).\n"
            "  --per-expert  experts as mlp.experts.{e}.{gate,up,down}_proj.weight (as\n"
            "                transformers' save_pretrained writes them) instead of the fused\n"
            "                mlp.experts.gate_up_proj / down_proj of the hub checkpoints\n"
            "  --all-bf16    A_log and linear_attn.norm.weight in BF16 (save_pretrained) instead\n"
            "                of F32 (hub checkpoints)\n"
            "  --list        the built-in configurations\n");
}

static void list(void)
{
    for (size_t i = 0; mkmodel_builtin(i); i++)
        printf("%-10s %s\n", mkmodel_builtin(i)->name, mkmodel_builtin(i)->about);
}

/* A decimal seed in [0, 2^64). */
static int parse_seed(const char *s, unsigned long long *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-')
        return -1;
    *out = strtoull(s, &end, 10);
    return errno || *end ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *name = NULL, *out = NULL;
    struct mkmodel_opts o = {.seed = 0, .progress = stderr};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--list")) {
            list();
            return 0;
        } else if (!strcmp(a, "--per-expert")) {
            o.per_expert = 1;
        } else if (!strcmp(a, "--all-bf16")) {
            o.all_bf16 = 1;
        } else if (!strcmp(a, "--config") && has_value) {
            name = argv[++i];
        } else if (!strcmp(a, "--out") && has_value) {
            out = argv[++i];
        } else if (!strcmp(a, "--seed") && has_value) {
            unsigned long long seed;
            if (parse_seed(argv[++i], &seed)) {
                fprintf(stderr, "mkmodel: --seed %s is not a non-negative integer\n", argv[i]);
                return 2;
            }
            o.seed = seed;
        } else {
            fprintf(stderr, "mkmodel: unknown or incomplete argument %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!name || !out) {
        fprintf(stderr, "mkmodel: --config and --out are required\n");
        usage(stderr);
        return 2;
    }
    const struct mkmodel_spec *s = mkmodel_find(name);
    if (!s) {
        fprintf(stderr, "mkmodel: no built-in configuration %s; these exist:\n", name);
        for (size_t i = 0; mkmodel_builtin(i); i++)
            fprintf(stderr, "  %s\n", mkmodel_builtin(i)->name);
        return 2;
    }
    char err[MKMODEL_ERR_LEN];
    if (mkmodel_write(out, s, &o, err)) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return 1;
    }
    return 0;
}
