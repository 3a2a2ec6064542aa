/* test_convert_bad.c — the converter on bad input: every case must fail, say what is wrong
 * naming the file and the tensor (or config field) at fault, and leave nothing at the output
 * path (neither the image nor its temporary file).
 *
 * Each case is a copy of a transformers fixture (tiny-a-fused, or tiny-a for the per-expert
 * layout) edited in memory and written back: a truncated file, a header length beyond the
 * file, broken header JSON, a wrong dtype or shape, missing tensors (plain, fused, one expert),
 * shards that disagree with their index (a name in two shards, a missing shard, an entry
 * pointing at the wrong shard), an unknown model type, an extra language-model tensor, a
 * non-finite weight under INT4, a full disk (RLIMIT_FSIZE in a child, SIGXFSZ ignored), and a
 * missing output directory. Tensors the converter must skip (vision, an MTP head the config
 * does not declare) are checked not to be errors. */
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "fix_convert.h"

static char scratch[] = "/tmp/qrt_convert_bad_XXXXXX";
static const char *shard_files[] = {"model-00001-of-00002.safetensors",
                                    "model-00002-of-00002.safetensors"};

#define Q_PROJ "model.language_model.layers.3.self_attn.q_proj.weight"
#define IN_Z   "model.language_model.layers.1.linear_attn.in_proj_z.weight"

/* ---- edits: each writes the checkpoint files of a variant into dir ----------------------- */

static void st_path(char *out, size_t cap, const char *dir)
{
    snprintf(out, cap, "%s/model.safetensors", dir);
}

static void write_single(struct fx_ckpt *c, const char *dir)
{
    char p[700];
    st_path(p, sizeof p, dir);
    fx_write(c, p, -1);
}

/* Overwrite n bytes at off of dir/model.safetensors. */
static void poke(const char *dir, long off, const void *bytes, size_t n)
{
    char p[700];
    st_path(p, sizeof p, dir);
    FILE *f = fopen(p, "r+b");
    if (!f || fseek(f, off, SEEK_SET) || fwrite(bytes, 1, n, f) != n || fclose(f))
        printf("FAIL cannot edit %s\n", p);
}

static void truncate_half(struct fx_ckpt *c, const char *dir)
{
    char p[700];
    struct stat st;
    write_single(c, dir);
    st_path(p, sizeof p, dir);
    if (stat(p, &st) || truncate(p, st.st_size / 2))
        printf("FAIL cannot truncate %s\n", p);
}

static void header_beyond(struct fx_ckpt *c, const char *dir)
{
    uint8_t len[8] = {0, 0, 0, 0, 1, 0, 0, 0}; /* 2^32 bytes of header */
    write_single(c, dir);
    poke(dir, 0, len, 8);
}

static void header_json(struct fx_ckpt *c, const char *dir)
{
    write_single(c, dir);
    poke(dir, 8 + 1, "\x01", 1); /* a control character right after the opening brace */
}

/* An unknown dtype string in the header, on the first tensor ("lm_head.weight" sorts first). */
static void header_dtype_name(struct fx_ckpt *c, const char *dir)
{
    char p[700];
    size_t n;
    write_single(c, dir);
    st_path(p, sizeof p, dir);
    char *f = test_read_file(p, &n), *at = strstr(f + 8, "\"dtype\":\"BF16\"");
    if (at)
        poke(dir, at - f + 9, "X", 1); /* "BF16" -> "XF16" */
    free(f);
}

static void wrong_dtype(struct fx_ckpt *c, const char *dir)
{
    fx_find(c, Q_PROJ)->dtype = WT_ST_I16;
    write_single(c, dir);
}

static void wrong_shape(struct fx_ckpt *c, const char *dir)
{
    struct fx_tensor *t = fx_find(c, Q_PROJ);
    t->shape[0] = 256, t->shape[1] = 256;
    write_single(c, dir);
}

static void missing(struct fx_ckpt *c, const char *dir)
{
    fx_find(c, IN_Z)->drop = 1;
    write_single(c, dir);
}

static void missing_fused(struct fx_ckpt *c, const char *dir)
{
    fx_find(c, "model.language_model.layers.2.mlp.experts.down_proj")->drop = 1;
    write_single(c, dir);
}

static void missing_expert(struct fx_ckpt *c, const char *dir)
{
    fx_find(c, "model.language_model.layers.2.mlp.experts.5.up_proj.weight")->drop = 1;
    write_single(c, dir);
}

static void extra_tensor(struct fx_ckpt *c, const char *dir)
{
    fx_add_copy(c, "model.language_model.layers.0.mlp.gate.weight",
                "model.language_model.layers.0.mlp.gate2.weight");
    write_single(c, dir);
}

/* Tensors alternate between two shards by position. */
static void write_shards(struct fx_ckpt *c, const char *dir)
{
    char p[700];
    for (int s = 0; s < 2; s++) {
        snprintf(p, sizeof p, "%s/%s", dir, shard_files[s]);
        fx_write(c, p, s);
    }
}

static void assign_shards(struct fx_ckpt *c)
{
    for (uint32_t i = 0; i < c->n; i++)
        c->t[i].shard = (int)(i % 2);
}

/* The same tensor in both shards; the index lists it once. */
static void dup_across_shards(struct fx_ckpt *c, const char *dir)
{
    assign_shards(c);
    struct fx_tensor *t = fx_add_copy(c, IN_Z, IN_Z);
    t->shard = 1 - fx_find(c, IN_Z)->shard;
    write_shards(c, dir);
    t->drop = 1;
    fx_write_index(c, dir, shard_files, NULL, NULL);
}

static void shard_missing(struct fx_ckpt *c, const char *dir)
{
    char p[700];
    assign_shards(c);
    write_shards(c, dir);
    fx_write_index(c, dir, shard_files, NULL, NULL);
    snprintf(p, sizeof p, "%s/%s", dir, shard_files[1]);
    remove(p);
}

/* The index says IN_Z is in the shard that does not hold it. */
static void index_wrong_shard(struct fx_ckpt *c, const char *dir)
{
    assign_shards(c);
    write_shards(c, dir);
    fx_write_index(c, dir, shard_files, IN_Z, shard_files[1 - fx_find(c, IN_Z)->shard]);
}

static void nan_weight(struct fx_ckpt *c, const char *dir)
{
    struct fx_tensor *t =
        fx_find(c, "model.language_model.layers.0.linear_attn.in_proj_qkv.weight");
    uint16_t nan = 0x7FC0;
    memcpy(t->data + 2 * (5 * t->shape[1] + 7), &nan, 2); /* row 5 */
    write_single(c, dir);
}

static void unknown_type(struct fx_ckpt *c, const char *dir)
{
    char p[700];
    size_t n;
    write_single(c, dir);
    snprintf(p, sizeof p, "%s/config.json", dir);
    char *j = test_read_file(p, &n), *at = strstr(j, "\"model_type\": \"qwen3_5_moe\"");
    if (at)
        memcpy(at + 15, "llama\"      ", 12); /* spaces keep the JSON valid */
    fx_write_file(p, j, n);
    free(j);
}

/* Skipped, not errors: a vision tensor and an MTP head the config does not declare. */
static void harmless_extras(struct fx_ckpt *c, const char *dir)
{
    fx_add_copy(c, "model.language_model.norm.weight", "model.visual.extra.weight");
    fx_add_copy(c, "model.language_model.layers.0.mlp.gate.weight", "mtp.fc.weight");
    write_single(c, dir);
}

/* ---- the cases ------------------------------------------------------------------------------ */

struct bad_case {
    const char *label;
    const char *base; /* fixture the variant starts from */
    void (*edit)(struct fx_ckpt *c, const char *dir);
    const char *fmt;
    const char *needle[3]; /* each must appear in the message */
};

#define FUSED      FX_FIXTURES "/tiny-a-fused"
#define PER_EXPERT FX_FIXTURES "/tiny-a"

/* clang-format off */
static const struct bad_case cases[] = {
    {"truncated file", FUSED, truncate_half, "bf16",
     {"model.safetensors: ", "data_offsets must be [begin, end] inside", "tensor "}},
    {"header length beyond the file", FUSED, header_beyond, "bf16",
     {"model.safetensors: ", "header length 4294967296 is beyond the file", NULL}},
    {"header JSON error", FUSED, header_json, "bf16", {"model.safetensors: ", "header JSON: ", NULL}},
    {"unknown dtype in the header", FUSED, header_dtype_name, "bf16",
     {"model.safetensors: ", "tensor lm_head.weight: unknown dtype", NULL}},
    {"wrong dtype", FUSED, wrong_dtype, "bf16",
     {"model.safetensors: " Q_PROJ ": dtype I16, expected BF16, F16 or F32", NULL, NULL}},
    {"wrong shape", FUSED, wrong_shape, "int4:32",
     {"model.safetensors: " Q_PROJ ": shape [256, 256], expected [512, 128]", NULL, NULL}},
    {"missing tensor", FUSED, missing, "bf16", {"model.safetensors: ", IN_Z " is missing", NULL}},
    {"missing fused expert tensor", FUSED, missing_fused, "bf16",
     {"model.language_model.layers.2.mlp.experts.down_proj is missing",
      "model.language_model.layers.2.mlp.experts.0.down_proj.weight", NULL}},
    {"missing expert of the per-expert layout", PER_EXPERT, missing_expert, "bf16",
     {"model.safetensors: ", "layers.2.mlp.experts.5.up_proj.weight is missing", NULL}},
    {"extra language-model tensor", FUSED, extra_tensor, "bf16",
     {"model.safetensors: model.language_model.layers.0.mlp.gate2.weight: unexpected tensor", NULL,
      NULL}},
    {"a name in two shards", FUSED, dup_across_shards, "bf16",
     {IN_Z " is in two shards", "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors"}},
    {"a shard missing", FUSED, shard_missing, "bf16",
     {"model.safetensors.index.json: ", "shard model-00002-of-00002.safetensors is missing", NULL}},
    {"an index entry pointing at a shard without the tensor", FUSED, index_wrong_shard, "bf16",
     {"model.safetensors.index.json: weight_map puts " IN_Z, "which does not hold it",
      "; it is in "}},
    {"a NaN weight under INT4", FUSED, nan_weight, "int4:32",
     {"model.safetensors: model.language_model.layers.0.linear_attn.in_proj_qkv.weight: row 5 "
      "holds a value that is not finite", NULL, NULL}},
    {"unknown model type", FUSED, unknown_type, "bf16",
     {"config.json", "model_type \"llama\" is not supported", NULL}},
};
/* clang-format on */

static void run_case(int k, const struct bad_case *b)
{
    static struct fx_ckpt c;
    char name[32], dir[600], path[700], img[700], err[WT_CONV_ERR_LEN];
    snprintf(name, sizeof name, "case%02d", k);
    fx_ckpt_dir(dir, sizeof dir, scratch, name, b->base);
    snprintf(path, sizeof path, "%s/model.safetensors", b->base);
    fx_load(&c, path);
    b->edit(&c, dir);
    fx_free(&c);
    snprintf(img, sizeof img, "%s/%s.img", scratch, name);
    int rc = fx_convert(dir, img, b->fmt, 0, err);
    int named = rc != 0;
    for (int i = 0; i < 3 && named; i++)
        named = !b->needle[i] || strstr(err, b->needle[i]);
    CHECK(named && fx_no_output(img), "%s: fails, names file and tensor, no output: %s", b->label,
          rc ? err : "(converted)");
}

/* Vision tensors and an undeclared MTP head are skipped, not errors. */
static void skipped_extras(void)
{
    static struct fx_ckpt c;
    char dir[600], img[700], err[WT_CONV_ERR_LEN];
    fx_ckpt_dir(dir, sizeof dir, scratch, "extras", FUSED);
    fx_load(&c, FUSED "/model.safetensors");
    harmless_extras(&c, dir);
    fx_free(&c);
    snprintf(img, sizeof img, "%s/extras.img", scratch);
    struct wt_conv_opts o = {
        .in_dir = dir, .out = img, .fmt = {PLAN_QUANT_BF16, 0, PLAN_QUANT_BF16}};
    struct wt_conv_result r;
    int rc = wt_convert(&o, &r, err);
    CHECK(rc == 0 && r.skipped == 23,
          "an extra vision tensor and an mtp.* tensor of a model "
          "without MTP are skipped (%u skipped)%s%s",
          r.skipped, rc ? ": " : "", rc ? err : "");
}

/* A file size limit stands in for a full disk: the write fails in the middle of the image. */
static void full_disk(void)
{
    char img[700], err[WT_CONV_ERR_LEN] = "";
    int fd[2];
    snprintf(img, sizeof img, "%s/full.img", scratch);
    if (pipe(fd)) {
        CHECK(0, "full disk: pipe");
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {256 << 10, 256 << 10};
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
        int rc = fx_convert(FUSED, img, "bf16", 0, err);
        ssize_t w = write(fd[1], err, strlen(err) + 1);
        (void)w;
        _exit(rc ? 1 : 0);
    }
    close(fd[1]);
    ssize_t n = read(fd[0], err, sizeof err - 1);
    err[n > 0 ? n : 0] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1 && strstr(err, "writing tensor ") &&
              strstr(err, "File too large") && strstr(err, "full.img.tmp") && fx_no_output(img),
          "full disk (RLIMIT_FSIZE 256 KiB, SIGXFSZ ignored): fails naming the file and tensor, "
          "no output: %s",
          err);
}

static void paths(void)
{
    char dir[600], img[700], err[WT_CONV_ERR_LEN];
    snprintf(img, sizeof img, "%s/no-such-dir/x.img", scratch);
    int rc = fx_convert(FUSED, img, "bf16", 0, err);
    CHECK(rc != 0 && strstr(err, "no-such-dir/x.img.tmp") && strstr(err, "No such file") &&
              fx_no_output(img),
          "output directory missing: fails naming the path: %s", err);
    snprintf(dir, sizeof dir, "%s/empty", scratch);
    mkdir(dir, 0755);
    snprintf(img, sizeof img, "%s/empty.img", scratch);
    rc = fx_convert(dir, img, "bf16", 0, err);
    CHECK(rc != 0 && strstr(err, "empty/config.json") && fx_no_output(img),
          "a directory without config.json: fails naming it: %s", err);
    fx_ckpt_dir(dir, sizeof dir, scratch, "no-weights", FUSED);
    rc = fx_convert(dir, img, "bf16", 0, err);
    CHECK(rc != 0 && strstr(err, "no model.safetensors or model.safetensors.index.json") &&
              fx_no_output(img),
          "a directory without weights: fails saying what it looked for: %s", err);
}

int main(void)
{
    fx_mkdtemp(scratch);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        run_case((int)k, &cases[k]);
    skipped_extras();
    full_disk();
    paths();
    fx_rm_tree(scratch);
    return test_done();
}
