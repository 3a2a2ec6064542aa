/* planner.c — `planner --max-seq 4096 > plan.bin`: everything decided before the box boots.
 *
 * Reads the model configuration (built in: Qwen3.5-35B-A3B; or --config config.json), derives
 * the weight manifest for the chosen storage format, emits the decode and prefill schedules
 * (sched.c), lays the arena out and verifies it (build.c, arena.c), embeds the kernel images
 * of the chosen archs, and writes plan.bin (planfile.h), which its own reader checks before a
 * byte reaches the output. Nothing is written unless the whole plan is good.
 *
 * Prefill chunk default, 4096 tokens: every chunk of a few hundred tokens touches nearly all
 * 256 experts of every layer, so each chunk streams ~17 GB of expert weights (~6 ms on an
 * H100) and expands the dense INT4 projections for cuBLAS again. A 4096-token prompt in one
 * chunk measured 42,589 tok/s against 40,096 as two of 2048 (H100, same run), for 96 MiB more
 * overlay. Buckets below it (16, 64, the powers of two from 128 and 1.5 times those from 512:
 * buckets()) keep shorter prompts from paying for 4096 (cuBLAS computes every row of a bucket). */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "build.h"
#include "planfile.h"

#define DEFAULT_CHUNK 4096
#define DEFAULT_SPLIT_THRESHOLD 256 /* single-pass vs split-K crossover measured elsewhere */
#define DEFAULT_SPLITS 64
#define VERSION "planner 1"

static const char *all_archs[] = {"sm_80", "sm_86", "sm_87", "sm_89", "sm_90a"};
#define NARCHS 5

struct opts {
    const char *config, *out, *verify, *kern_dir;
    uint32_t max_seq, chunk, split_threshold, splits;
    struct wt_format fmt;
    uint32_t archs[PLAN_MAX_ARCHS], narchs;
    uint64_t device_mem;
    int quiet;
    int arch_given;         /* --arch was on the command line */
    int moe_fused;          /* --moe-decode fused */
    int dense_cublas;       /* --dense-prefill cublas */
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: planner [options] > plan.bin\n"
            "       planner --verify plan.bin\n"
            "\n"
            "Lays out the arena and the launch schedules of the Qwen3.5-MoE runtime and writes\n"
            "plan.bin (the arena layout, the weight manifest, the kernel images, the schedules).\n"
            "\n"
            "  --max-seq N          context capacity in tokens (default 4096); at most the\n"
            "                       model's max_position_embeddings\n"
            "  --config FILE        Hugging Face config.json (default: built-in Qwen3.5-35B-A3B)\n"
            "  --quant Q            weight format of projections and experts: bf16, int4 (group\n"
            "                       128), int4:32, int4:64, int4:128 (default int4)\n"
            "  --lm-head Q          format of lm_head: bf16 or int4[:G] (default bf16)\n"
            "  --prefill-chunk N    largest prefill chunk in tokens (default %d); schedules are\n"
            "                       made for 16, 64, 128, 256, 512, 768, 1024, 1536, ...\n"
            "                       (powers of two, and 1.5 times those from 512) below it\n"
            "                       and for N itself; a prompt runs in the smallest that\n"
            "                       holds it\n"
            "  --arch LIST          comma-separated kernel images to embed, from sm_80, sm_86,\n"
            "                       sm_87, sm_89, sm_90a (default: all of them whose shared\n"
            "                       memory holds the model's kernels; sm_86 and sm_89 cannot\n"
            "                       hold Qwen3.5-35B-A3B's chunked Gated DeltaNet kernel)\n"
            "  --kern-dir DIR       where the built kernel images are (default: kern/ beside the\n"
            "                       planner binary)\n"
            "  --split-threshold N  decode attention uses split-K above this filled length\n"
            "                       (default %d)\n"
            "  --splits N           split-K pieces per KV head (default %d)\n"
            "  --moe-decode K       the INT4 group-128 decode MoE block as an up and a down\n"
            "                       kernel (pair, the default) or as one launch whose CTAs\n"
            "                       take both roles (fused; slower on an H100 today)\n"
            "  --dense-prefill K    the large INT4 group-128 dense projections of prefill\n"
            "                       chunks of 33 to 128 tokens on k_gemm_i4_wg (nibbles, the\n"
            "                       default), or without it (cublas: k_gemm_i4_g128 up to 64\n"
            "                       tokens, expanded to bf16 for cuBLAS above, as longer\n"
            "                       chunks always are)\n"
            "  --device-mem SIZE    fail if arena plus weights exceed SIZE (bytes, or with K, M, G)\n"
            "  -o FILE              write to FILE instead of standard output\n"
            "  --verify FILE        check an existing plan.bin and print its summary\n"
            "  -q                   no summary on standard error\n"
            "  --help               this text\n",
            DEFAULT_CHUNK, DEFAULT_SPLIT_THRESHOLD, DEFAULT_SPLITS);
}

static int die(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "planner: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    return 2;
}

/* A positive integer of at most max, or -1. */
static int64_t parse_count(const char *s, uint64_t max)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0 || v > max)
        return -1;
    return (int64_t)v;
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return -1;
    double v = strtod(s, &end);
    uint64_t m = 1;
    if (*end == 'K' || *end == 'k')
        m = 1ull << 10, end++;
    else if (*end == 'M' || *end == 'm')
        m = 1ull << 20, end++;
    else if (*end == 'G' || *end == 'g')
        m = 1ull << 30, end++;
    if (errno || *end || !(v > 0) || v * (double)m > 1e18)
        return -1;
    *out = (uint64_t)(v * (double)m);
    return 0;
}

static int parse_archs(struct opts *o, char *list)
{
    o->narchs = 0;
    memset(o->archs, 0, sizeof o->archs);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int found = 0;
        for (int i = 0; i < NARCHS; i++)
            if (!strcmp(tok, all_archs[i]) || (!strcmp(tok, "sm_90") && i == 4)) {
                uint32_t a = (uint32_t)atoi(all_archs[i] + 3);
                for (uint32_t k = 0; k < o->narchs; k++)
                    found |= o->archs[k] == a ? 2 : 0;
                if (!(found & 2))
                    o->archs[o->narchs++] = a;
                found = 1;
            }
        if (!found)
            return -1;
    }
    return o->narchs ? 0 : -1;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", argv[0]);
    static char kern[PATH_MAX];
    snprintf(kern, sizeof kern, "%s/kern", dirname(dir));
    uint32_t quant_group = 128, lm_group = 0;
    *o = (struct opts){.max_seq = 4096, .chunk = DEFAULT_CHUNK, .kern_dir = kern,
                       .split_threshold = DEFAULT_SPLIT_THRESHOLD, .splits = DEFAULT_SPLITS,
                       .fmt = {PLAN_QUANT_INT4, 128, PLAN_QUANT_BF16}, .narchs = NARCHS};
    for (int i = 0; i < NARCHS; i++)
        o->archs[i] = (uint32_t)atoi(all_archs[i] + 3);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t n;
        uint32_t q, g;
        (void)g;
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            return usage(stdout), 1;
        if (!strcmp(a, "-q")) {
            o->quiet = 1;
            continue;
        }
        if (!v)
            return die("%s needs a value%s (see --help)", a, "");
        i++;
        if (!strcmp(a, "--max-seq")) {
            if ((n = parse_count(v, 1u << 30)) < 0)
                return die("--max-seq %s: expected a positive number of tokens%s", v, "");
            o->max_seq = (uint32_t)n;
        } else if (!strcmp(a, "--config")) {
            o->config = v;
        } else if (!strcmp(a, "--quant")) {
            if (wt_format_parse(v, &q, &g))
                return die("%s %s: expected bf16, int4, int4:32, int4:64 or int4:128", a, v);
            o->fmt.quant = q, quant_group = g ? g : 128;
        } else if (!strcmp(a, "--lm-head")) {
            if (wt_format_parse_lm_head(v, &q, &lm_group))
                return die("%s %s: expected bf16, int4, int4:32, int4:64 or int4:128", a, v);
            o->fmt.lm_head_quant = q;
        } else if (!strcmp(a, "--prefill-chunk")) {
            if ((n = parse_count(v, 1u << 16)) < 0)
                return die("--prefill-chunk %s: expected 1..65536 tokens%s", v, "");
            o->chunk = (uint32_t)n;
        } else if (!strcmp(a, "--arch")) {
            static char list[256];
            snprintf(list, sizeof list, "%s", v);
            if (parse_archs(o, list))
                return die("--arch %s: expected a comma-separated list of sm_80, sm_86, sm_87, "
                           "sm_89, sm_90a%s", v, "");
            o->arch_given = 1;
        } else if (!strcmp(a, "--kern-dir")) {
            o->kern_dir = v;
        } else if (!strcmp(a, "--split-threshold")) {
            if ((n = parse_count(v, 1u << 30)) < 0)
                return die("--split-threshold %s: expected a positive number of tokens%s", v, "");
            o->split_threshold = (uint32_t)n;
        } else if (!strcmp(a, "--splits")) {
            if ((n = parse_count(v, 1024)) < 0)
                return die("--splits %s: expected 1..1024%s", v, "");
            o->splits = (uint32_t)n;
        } else if (!strcmp(a, "--moe-decode")) {
            if (strcmp(v, "fused") && strcmp(v, "pair"))
                return die("--moe-decode %s: expected pair or fused%s", v, "");
            o->moe_fused = !strcmp(v, "fused");
        } else if (!strcmp(a, "--dense-prefill")) {
            if (strcmp(v, "nibbles") && strcmp(v, "cublas"))
                return die("--dense-prefill %s: expected nibbles or cublas%s", v, "");
            o->dense_cublas = !strcmp(v, "cublas");
        } else if (!strcmp(a, "--device-mem")) {
            if (parse_size(v, &o->device_mem))
                return die("--device-mem %s: expected a size such as 80G%s", v, "");
        } else if (!strcmp(a, "-o")) {
            o->out = v;
        } else if (!strcmp(a, "--verify")) {
            o->verify = v;
        } else {
            return die("unknown option %s%s (see --help)", a, "");
        }
    }
    /* one group serves projections and lm_head, settled as the converter does */
    if (wt_format_resolve(&o->fmt, quant_group, lm_group))
        return die("--quant and --lm-head name different INT4 group sizes%s%s; one group serves both",
                   "", "");
    return 0;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) &&
            fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *len = n > 0 ? (size_t)n : 0;
    }
    fclose(f);
    return buf;
}

/* Load the cubin of every chosen arch into one IMAGE_DATA blob. */
static int load_images(const struct opts *o, struct plan_image *im, uint8_t **data, uint64_t *size)
{
    *data = NULL, *size = 0;
    for (uint32_t i = 0; i < o->narchs; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/sm_%u%s.cubin", o->kern_dir, o->archs[i],
                 o->archs[i] == 90 ? "a" : "");
        size_t n = 0;
        uint8_t *img = read_file(path, &n);
        if (!img) {
            fprintf(stderr, "planner: cannot read kernel image %s: %s (build it with make, or "
                            "point --kern-dir at the build's kern/ folder)\n",
                    path, errno ? strerror(errno) : "empty");
            return -1;
        }
        uint64_t at = (*size + 255) & ~255ull;
        uint8_t *p = realloc(*data, at + n);
        if (!p) {
            free(img);
            fprintf(stderr, "planner: out of memory\n");
            return -1;
        }
        memset(p + *size, 0, at - *size);
        memcpy(p + at, img, n);
        free(img);
        *data = p, *size = at + n;
        im[i] = (struct plan_image){o->archs[i], PLAN_IMAGE_CUBIN, at, n};
    }
    return 0;
}

static double gib(uint64_t b) { return (double)b / (double)(1ull << 30); }
static double mib(uint64_t b) { return (double)b / (double)(1ull << 20); }

/* The summary a person reads: on stderr when planning, on stdout for --verify. */
static void summary(FILE *f, const struct plan_view *p, uint64_t naive_overlay)
{
    const struct plan_identity *id = &p->id;
    const struct model_config *c = &id->model;
    char q[32], lq[32];
    wt_format_name(id->quant, id->group_size, q, sizeof q);
    wt_format_name(id->lm_head_quant, id->group_size, lq, sizeof lq);
    fprintf(f, "model: %u layers (%u Gated DeltaNet, %u attention), hidden %u, %u experts top-%u, vocab %u\n",
            c->num_layers, model_count_layers(c, MODEL_LAYER_LINEAR),
            model_count_layers(c, MODEL_LAYER_FULL), c->hidden_size, c->num_experts,
            c->num_experts_per_tok, c->vocab_size);
    fprintf(f, "max_seq %u; weights %s, lm_head %s: %.2f GiB in %u tensors\n", id->max_seq, q, lq,
            gib(id->weights_bytes), p->num_weights);
    uint64_t overlay = 0;
    fprintf(f, "arena %.1f MiB:", mib(id->arena_bytes));
    for (uint32_t i = 0; i < p->num_regions; i++) {
        struct plan_region r;
        plan_get_region(p, i, &r);
        overlay = r.kind == PLAN_REGION_OVERLAY ? r.size : overlay;
        fprintf(f, " %s %.1f MiB%s", plan_str(p, r.name), mib(r.size),
                i + 1 < p->num_regions ? "," : "\n");
    }
    if (naive_overlay) /* known only while planning: the lifetimes are not all in the file */
        fprintf(f, "overlay placed by lifetime: %.1f MiB where every activation of every "
                   "schedule in its own bytes would take %.1f MiB\n",
                mib(overlay), mib(naive_overlay));
    for (uint32_t i = 0; i < p->num_schedules; i++) {
        struct plan_schedule s;
        plan_get_schedule(p, i, &s);
        fprintf(f, "schedule %-14s %-7s tokens %-5u filled length %u..%u, %u ops\n",
                plan_str(p, s.name), s.kind == PLAN_SCHED_DECODE ? "decode" : "prefill", s.tokens,
                s.kv_min, s.kv_max, s.op_count);
    }
    fprintf(f, "kernels %u; images:", p->num_kernels);
    for (uint32_t i = 0; i < p->num_images; i++) {
        struct plan_image im;
        plan_get_image(p, i, &im);
        fprintf(f, " sm_%u%s (%.0f KiB)", im.arch, im.arch == 90 ? "a" : "", (double)im.size / 1024);
    }
    fprintf(f, "\n");
}

static int verify(const char *path)
{
    size_t n = 0;
    errno = 0;
    uint8_t *buf = read_file(path, &n);
    if (!buf) {
        fprintf(stderr, "planner: cannot read %s: %s\n", path, errno ? strerror(errno) : "empty file");
        return 1;
    }
    struct plan_view p;
    char err[FMT_ERR_LEN];
    enum fmt_status st = plan_read(&p, buf, n, err);
    if (st != FMT_OK) {
        fprintf(stderr, "planner: %s is not a valid plan: %s: %s\n", path, fmt_status_name(st), err);
        free(buf);
        return 1;
    }
    printf("%s: valid plan (%zu bytes, format version %u, %s)\n", path, n, PLAN_VERSION,
           p.id.planner_version);
    summary(stdout, &p, 0);
    free(buf);
    return 0;
}

/* Write all of buf to path atomically (temp file + rename), or to stdout when path is NULL. */
static int emit(const char *path, const uint8_t *buf, size_t n)
{
    if (!path) {
        if (isatty(STDOUT_FILENO)) {
            fprintf(stderr, "planner: refusing to write a binary plan to a terminal: redirect "
                            "standard output (planner ... > plan.bin) or use -o FILE\n");
            return 1;
        }
        if (fwrite(buf, 1, n, stdout) != n || fflush(stdout)) {
            fprintf(stderr, "planner: writing standard output: %s\n", strerror(errno));
            return 1;
        }
        return 0;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f || fwrite(buf, 1, n, f) != n || fflush(f) || fsync(fileno(f))) {
        fprintf(stderr, "planner: writing %s: %s\n", tmp, strerror(errno));
        if (f)
            fclose(f);
        remove(tmp);
        return 1;
    }
    if (fclose(f) || rename(tmp, path)) {
        fprintf(stderr, "planner: writing %s: %s\n", path, strerror(errno));
        remove(tmp);
        return 1;
    }
    return 0;
}

/* Prefill buckets below the chunk: 16, 64, then the powers of two from 128, from 512 up each
 * with 1.5 times it too (768, 1536, 3072, ...), then the chunk (capped by max_seq). A prompt
 * runs in the smallest bucket that holds it, and the dense projections (cuBLAS) compute every
 * row of a bucket: from 256 up a bucket holds at most 2 (below 512) or 1.5 times the tokens
 * that need it, where 16, 64, 256, 1024 made a 257-token prompt compute 1024 rows. */
static void buckets(struct pb *b, uint32_t chunk)
{
    if (chunk > b->max_seq)
        chunk = b->max_seq;
    b->num_buckets = 0;
#define BUCKET(t)                                                                                  \
    if ((t) < chunk && b->num_buckets < PLAN_MAX_BUCKETS - 1)                                      \
    b->buckets[b->num_buckets++] = (t)
    BUCKET(16u);
    BUCKET(64u);
    for (uint64_t t = 128; t < chunk; t *= 2) {
        BUCKET((uint32_t)t);
        if (t >= 512)
            BUCKET((uint32_t)(t + t / 2));
    }
#undef BUCKET
    b->buckets[b->num_buckets++] = chunk;
}

static int plan(const struct opts *o_in)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const struct opts *o = o_in;
    struct model_config c;
    char err[PB_ERR_LEN > FMT_ERR_LEN ? PB_ERR_LEN : FMT_ERR_LEN];
    if (o->config ? model_config_load(&c, o->config, err) : (model_config_default(&c), 0))
        return die("%s%s", err, "");
    if (o->max_seq > c.max_position) {
        fprintf(stderr, "planner: --max-seq %u is beyond the model's max_position_embeddings %u\n",
                o->max_seq, c.max_position);
        return 2;
    }
    struct pb b;
    struct plan_image im[PLAN_MAX_ARCHS];
    uint8_t *img = NULL, *out = NULL;
    uint64_t img_size = 0;
    size_t out_len = 0;
    int rc = 1;
    if (pb_init(&b, &c, &o->fmt, o->max_seq, err)) {
        fprintf(stderr, "planner: this model cannot be served in this format: %s\n", err);
        return 2;
    }
    b.split_threshold = o->split_threshold;
    b.n_split = o->splits;
    b.moe_fused = o->moe_fused;
    b.dense_cublas = o->dense_cublas;
    /* archs whose shared memory cannot hold the largest kernel: an explicit --arch is an error,
     * the default list just leaves them out (and says so) */
    struct opts oo = *o;
    uint32_t need = plan_min_smem(&c);
    oo.narchs = 0;
    memset(oo.archs, 0, sizeof oo.archs);
    char left_out[128] = "";
    for (uint32_t i = 0; i < o->narchs; i++) {
        if (plan_arch_smem(o->archs[i]) >= need) {
            oo.archs[oo.narchs++] = o->archs[i];
            continue;
        }
        if (o->arch_given) {
            fprintf(stderr, "planner: sm_%u: its %u bytes of shared memory per block cannot hold the "
                            "chunked Gated DeltaNet kernel of this model (%u bytes)\n",
                    o->archs[i], plan_arch_smem(o->archs[i]), need);
            pb_free(&b);
            return 2;
        }
        size_t l = strlen(left_out);
        snprintf(left_out + l, sizeof left_out - l, " sm_%u", o->archs[i]);
    }
    o = &oo;
    b.smem_limit = UINT32_MAX;
    for (uint32_t i = 0; i < o->narchs; i++)
        b.smem_limit = plan_arch_smem(o->archs[i]) < b.smem_limit ? plan_arch_smem(o->archs[i]) : b.smem_limit;
    buckets(&b, o->chunk);
    if (plan_emit_schedules(&b) || plan_build_finish(&b)) {
        fprintf(stderr, "planner: %s\n", b.err);
        goto out;
    }
    struct plan_content pc;
    if (plan_build_content(&b, &pc) || load_images(o, im, &img, &img_size))
        goto out;
    pc.images = im, pc.num_images = o->narchs;
    pc.image_data = img, pc.image_data_size = img_size;
    pc.id.num_archs = o->narchs;
    memcpy(pc.id.archs, o->archs, sizeof pc.id.archs);
    snprintf(pc.id.planner_version, sizeof pc.id.planner_version, "%s", VERSION);
    if (o->device_mem && pc.id.arena_bytes + pc.id.weights_bytes > o->device_mem) {
        fprintf(stderr, "planner: arena %.2f GiB + weights %.2f GiB = %.2f GiB exceed --device-mem "
                        "%.2f GiB: lower --max-seq or --prefill-chunk, or use a smaller format\n",
                gib(pc.id.arena_bytes), gib(pc.id.weights_bytes),
                gib(pc.id.arena_bytes + pc.id.weights_bytes), gib(o->device_mem));
        goto out;
    }
    enum fmt_status st = plan_write(&pc, &out, &out_len, err);
    if (st != FMT_OK) {
        fprintf(stderr, "planner: internal error: the plan does not pass its own reader: %s: %s\n",
                fmt_status_name(st), err);
        goto out;
    }
    if (emit(o->out, out, out_len))
        goto out;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!o->quiet) {
        struct plan_view p;
        plan_read(&p, out, out_len, err);
        summary(stderr, &p, b.naive_overlay);
        if (left_out[0])
            fprintf(stderr, "left out%s: their shared memory per block cannot hold this model's "
                            "chunked Gated DeltaNet kernel (%u bytes)\n", left_out, need);
        fprintf(stderr, "wrote %s: %zu bytes in %.0f ms\n", o->out ? o->out : "plan to standard output",
                out_len, 1e3 * (double)(t1.tv_sec - t0.tv_sec) + 1e-6 * (double)(t1.tv_nsec - t0.tv_nsec));
    }
    rc = 0;
out:
    free(out);
    free(img);
    pb_free(&b);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o;
    int rc = parse_args(&o, argc, argv);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (o.verify)
        return verify(o.verify);
    return plan(&o);
}
