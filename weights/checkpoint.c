/* checkpoint.c — open a Hugging Face checkpoint directory and map image tensor names to their
 * sources in it (checkpoint.h).
 *
 * Opening builds one sorted table of every tensor of every file (name, file), which finds
 * names in O(log n) and makes a tensor present in two shards show up as two equal neighbours.
 * Binding walks the manifest: each image tensor becomes a list of parts (a fused or plain
 * tensor is one part; a per-expert layout gives 2E parts for gate_up, gate then up of each
 * expert, and E for down), each part checked for shape and dtype, and each source tensor marked
 * used. Whatever language-model tensor is left unmarked afterwards is one the config does not
 * describe, which is an error: converting would silently drop weights. */
#include "checkpoint.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../plan/json.h"

#define SINGLE_FILE     "model.safetensors"
#define INDEX_FILE      "model.safetensors.index.json"
#define MAX_INDEX_BYTES (64u << 20) /* the 35B index is ~100 KB; refuse absurd files */
#define PREFIX_MM       "model.language_model."
#define PREFIX_LM       "model."

struct wt_ck_entry {
    const char *name; /* into the file's name pool */
    uint32_t file;
    const struct wt_st_tensor *t;
    uint8_t used; /* taken by a manifest tensor */
};

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, WT_CK_ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int by_entry_name(const void *a, const void *b)
{
    const struct wt_ck_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->file > y->file) - (x->file < y->file);
}

static struct wt_ck_entry *find(const struct wt_ck *ck, const char *name)
{
    size_t lo = 0, hi = ck->nnames;
    while (lo < hi) { /* first entry not below name */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(ck->by_name[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ck->nnames && !strcmp(ck->by_name[lo].name, name) ? &ck->by_name[lo] : NULL;
}

/* ---- opening ------------------------------------------------------------------------------ */

/* The sorted table of every tensor; a name held by two files is an error. */
static int build_table(struct wt_ck *ck, char *err)
{
    uint64_t n = 0;
    for (uint32_t f = 0; f < ck->nfiles; f++)
        n += ck->files[f].n;
    if (n > UINT32_MAX || !(ck->by_name = calloc(n ? n : 1, sizeof *ck->by_name)))
        return fail(err, "%s: out of memory for the tensor table", ck->where);
    for (uint32_t f = 0; f < ck->nfiles; f++)
        for (uint32_t i = 0; i < ck->files[f].n; i++)
            ck->by_name[ck->nnames++] =
                (struct wt_ck_entry){ck->files[f].t[i].name, f, &ck->files[f].t[i], 0};
    qsort(ck->by_name, ck->nnames, sizeof *ck->by_name, by_entry_name);
    for (uint32_t i = 1; i < ck->nnames; i++)
        if (!strcmp(ck->by_name[i].name, ck->by_name[i - 1].name))
            return fail(err, "%s: tensor %s is in two shards: %s and %s", ck->where,
                        ck->by_name[i].name, ck->files[ck->by_name[i - 1].file].path,
                        ck->files[ck->by_name[i].file].path);
    /* the multimodal prefix wins when any tensor carries it (vision checkpoints use both) */
    ck->prefix = PREFIX_LM;
    for (uint32_t i = 0; i < ck->nnames; i++)
        if (!strncmp(ck->by_name[i].name, PREFIX_MM, strlen(PREFIX_MM)))
            ck->prefix = PREFIX_MM;
    return 0;
}

static int open_files(struct wt_ck *ck, char **names, uint32_t n, char *err)
{
    char path[WT_CK_PATH_LEN], why[WT_ST_ERR_LEN];
    if (!(ck->files = calloc(n ? n : 1, sizeof *ck->files)))
        return fail(err, "%s: out of memory", ck->where);
    for (uint32_t f = 0; f < n; f++) {
        snprintf(path, sizeof path, "%s/%s", ck->dir, names[f]);
        if (!file_exists(path))
            return fail(err, "%s: shard %s is missing (%s)", ck->where, names[f], path);
        if (wt_st_open(&ck->files[f], path, why))
            return fail(err, "%s", why);
        ck->nfiles++;
    }
    return 0;
}

/* Read the whole index file into a NUL-terminated buffer. */
static char *read_index(const char *path, size_t *len, char *err)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n = -1;
    if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || (uint64_t)n > MAX_INDEX_BYTES ||
        fseek(f, 0, SEEK_SET) || !(buf = malloc((size_t)n + 1)) ||
        fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fail(err, "%s: cannot read: %s", path,
             !f                          ? strerror(errno)
             : n > (long)MAX_INDEX_BYTES ? "larger than 64 MiB"
                                         : "I/O error");
        free(buf);
        buf = NULL;
    } else {
        buf[n] = 0;
        *len = (size_t)n;
    }
    if (f)
        fclose(f);
    return buf;
}

/* The distinct shard names of weight_map (a JSON object) into names[], sorted. */
static int shard_names(struct wt_ck *ck, const struct json_doc *d, uint32_t map, char ***out,
                       uint32_t *n, char *err)
{
    char **names = calloc(d->v[map].count ? d->v[map].count : 1, sizeof *names);
    uint32_t k = json_first(d, map), cnt = 0;
    if (!names)
        return fail(err, "%s: out of memory", ck->where);
    *out = names;
    for (uint32_t p = 0; p < d->v[map].count; p++, k = json_next(d, json_next(d, k))) {
        uint32_t v = json_next(d, k);
        char file[256];
        size_t len;
        if (json_string(d, v, file, sizeof file, &len) || len == 0 || strlen(file) != len ||
            strchr(file, '/'))
            return fail(err,
                        "%s: weight_map entry %u: the shard must be a file name in the "
                        "checkpoint directory",
                        ck->where, p);
        uint32_t j = 0;
        while (j < cnt && strcmp(names[j], file))
            j++;
        if (j == cnt && !(names[cnt++] = strdup(file)))
            return fail(err, "%s: out of memory", ck->where);
    }
    *n = cnt;
    return 0;
}

/* Every weight_map entry must be in the shard it names, and every tensor of a shard listed. */
static int check_index(struct wt_ck *ck, const struct json_doc *d, uint32_t map, char **names,
                       char *err)
{
    uint32_t k = json_first(d, map), listed = 0;
    for (uint32_t p = 0; p < d->v[map].count; p++, k = json_next(d, json_next(d, k))) {
        char tname[WT_MAX_NAME * 2], file[256];
        size_t len;
        if (json_string(d, k, tname, sizeof tname, &len) || strlen(tname) != len)
            return fail(err, "%s: weight_map key %u is not a usable tensor name", ck->where, p);
        json_string(d, json_next(d, k), file, sizeof file, &len);
        const struct wt_ck_entry *e = find(ck, tname);
        if (!e || strcmp(names[e->file], file))
            return fail(err, "%s: weight_map puts %s in %s/%s, which does not hold it%s%s",
                        ck->where, tname, ck->dir, file, e ? "; it is in " : "",
                        e ? ck->files[e->file].path : "");
        listed++;
    }
    if (listed != ck->nnames)
        for (uint32_t i = 0; i < ck->nnames; i++) {
            int64_t v = json_get(d, map, ck->by_name[i].name);
            if (v < 0)
                return fail(err, "%s: %s: tensor %s is not listed in the index's weight_map",
                            ck->where, ck->files[ck->by_name[i].file].path, ck->by_name[i].name);
        }
    return 0;
}

static int open_sharded(struct wt_ck *ck, char *err)
{
    struct json_doc d;
    size_t len = 0;
    char **names = NULL;
    uint32_t n = 0;
    int rc = -1;
    char *text = read_index(ck->where, &len, err);
    if (!text)
        return -1;
    if (json_parse(&d, text, len, 0)) {
        fail(err, "%s: %s", ck->where, d.err);
        goto free_json;
    }
    int64_t map = d.v[0].type == JSON_OBJECT ? json_get(&d, 0, "weight_map") : -1;
    if (map < 0 || d.v[map].type != JSON_OBJECT) {
        fail(err, "%s: needs a \"weight_map\" object from tensor names to shard files", ck->where);
        goto free_json;
    }
    if (shard_names(ck, &d, (uint32_t)map, &names, &n, err) || open_files(ck, names, n, err) ||
        build_table(ck, err) || check_index(ck, &d, (uint32_t)map, names, err))
        goto free_names;
    rc = 0;
free_names:
    for (uint32_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
free_json:
    json_free(&d);
    free(text);
    return rc;
}

int wt_ck_open(struct wt_ck *ck, const char *dir, char *err)
{
    memset(ck, 0, sizeof *ck);
    snprintf(ck->dir, sizeof ck->dir, "%s", dir);
    snprintf(ck->where, sizeof ck->where, "%s/%s", dir, SINGLE_FILE);
    int rc;
    if (file_exists(ck->where)) {
        char one[] = SINGLE_FILE, *names[1] = {one};
        rc = open_files(ck, names, 1, err) || build_table(ck, err) ? -1 : 0;
    } else {
        snprintf(ck->where, sizeof ck->where, "%s/%s", dir, INDEX_FILE);
        if (!file_exists(ck->where))
            rc = fail(err, "%s: no %s or %s in this directory", dir, SINGLE_FILE, INDEX_FILE);
        else
            rc = open_sharded(ck, err);
    }
    if (rc)
        wt_ck_close(ck);
    return rc;
}

void wt_ck_close(struct wt_ck *ck)
{
    for (uint32_t f = 0; f < ck->nfiles; f++)
        wt_st_close(&ck->files[f]);
    free(ck->files);
    free(ck->by_name);
    free(ck->src);
    free(ck->parts);
    memset(ck, 0, sizeof *ck);
}

/* ---- binding ------------------------------------------------------------------------------ */

static void shape_text(char *buf, size_t cap, const uint64_t *shape, uint32_t ndim)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%llu", d ? ", " : "",
                              (unsigned long long)shape[d]);
    if (k < cap)
        snprintf(buf + k, cap - k, "]");
}

/* Append a part: source tensor hf of the given shape supplies the next `rows` rows. */
static int add_part(struct wt_ck *ck, struct wt_ck_source *s, const char *hf, uint32_t ndim,
                    const uint64_t *shape, char *err)
{
    struct wt_ck_entry *e = find(ck, hf);
    if (!e)
        return fail(err, "%s: tensor %s is missing", ck->where, hf);
    const struct wt_st_tensor *t = e->t;
    int same = t->ndim == ndim;
    for (uint32_t d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char got[128], want[128];
        shape_text(got, sizeof got, t->shape, t->ndim);
        shape_text(want, sizeof want, shape, ndim);
        return fail(err, "%s: %s: shape %s, expected %s", ck->files[e->file].path, hf, got, want);
    }
    if (t->dtype != WT_ST_BF16 && t->dtype != WT_ST_F16 && t->dtype != WT_ST_F32)
        return fail(err, "%s: %s: dtype %s, expected BF16, F16 or F32", ck->files[e->file].path, hf,
                    wt_st_dtype_name(t->dtype));
    if (e->used)
        return fail(err, "%s: %s is used twice", ck->files[e->file].path, hf);
    if (ck->nparts == ck->parts_cap) {
        uint32_t cap = ck->parts_cap ? 2 * ck->parts_cap : 256;
        struct wt_ck_part *p = realloc(ck->parts, cap * sizeof *p);
        if (!p)
            return fail(err, "%s: out of memory", ck->where);
        ck->parts = p, ck->parts_cap = cap;
    }
    uint64_t rows = wt_st_numel(t) / shape[ndim - 1];
    ck->parts[ck->nparts++] = (struct wt_ck_part){e->file, t, s->rows, rows};
    s->count++;
    s->rows += rows;
    s->bytes += t->end - t->begin;
    e->used = 1;
    return 0;
}

/* Per-expert layout of a fused image tensor: base ends in "experts."; E parts per projection. */
static int add_per_expert(struct wt_ck *ck, struct wt_ck_source *s, const char *base, int gate_up,
                          const uint64_t *shape, char *err)
{
    char hf[WT_MAX_NAME * 2];
    uint64_t E = shape[0], rows = gate_up ? shape[1] / 2 : shape[1], one[2] = {rows, shape[2]};
    snprintf(hf, sizeof hf, "%s0.%s_proj.weight", base, gate_up ? "gate" : "down");
    if (!find(ck, hf)) {
        char fused[WT_MAX_NAME * 2];
        snprintf(fused, sizeof fused, "%s%s", base, gate_up ? "gate_up_proj" : "down_proj");
        return fail(err, "%s: tensor %s is missing (nor is there the per-expert %s)", ck->where,
                    fused, hf);
    }
    for (uint64_t e = 0; e < E; e++)
        for (int half = 0; half < (gate_up ? 2 : 1); half++) {
            const char *proj = !gate_up ? "down" : half ? "up" : "gate";
            snprintf(hf, sizeof hf, "%s%llu.%s_proj.weight", base, (unsigned long long)e, proj);
            if (add_part(ck, s, hf, 2, one, err))
                return -1;
        }
    return 0;
}

/* The checkpoint name of an image tensor: mtp.* and lm_head keep theirs, the rest get the
 * language-model prefix. */
static void hf_name(const struct wt_ck *ck, const char *image, char *out, size_t cap)
{
    if (!strcmp(image, "lm_head.weight") || !strncmp(image, "mtp.", 4))
        snprintf(out, cap, "%s", image);
    else
        snprintf(out, cap, "%s%s", ck->prefix, image);
}

static int bind_one(struct wt_ck *ck, const struct wt_tensor_desc *d, struct wt_ck_source *s,
                    char *err)
{
    char hf[WT_MAX_NAME * 2];
    hf_name(ck, d->name, hf, sizeof hf);
    s->first = ck->nparts;
    s->cols = d->shape[d->ndim - 1];
    const char *ex = strstr(hf, ".mlp.experts.");
    int gate_up = ex && !strcmp(ex, ".mlp.experts.gate_up_proj");
    int down = ex && !strcmp(ex, ".mlp.experts.down_proj");
    if ((gate_up || down) && !find(ck, hf)) {
        hf[ex - hf + strlen(".mlp.experts.")] = 0;
        return add_per_expert(ck, s, hf, gate_up, d->shape, err);
    }
    return add_part(ck, s, hf, d->ndim, d->shape, err);
}

/* 1 if a tensor the manifest did not take belongs to the language model (so is an error). */
static int is_language(const struct wt_ck *ck, const char *name, const struct model_config *c)
{
    if (!strncmp(name, "model.visual.", 13))
        return 0;
    if (!strncmp(name, "mtp.", 4))
        return c->mtp_layers > 0; /* a model without an MTP head may still ship one: skip it */
    if (!strcmp(name, "lm_head.weight"))
        return !c->tie_embeddings; /* a tied model's saved copy of the embedding */
    return !strncmp(name, ck->prefix, strlen(ck->prefix));
}

int wt_ck_bind(struct wt_ck *ck, const struct wt_manifest *m, const struct model_config *c,
               char *err)
{
    free(ck->src);
    ck->nparts = 0; /* a second bind starts over */
    for (uint32_t i = 0; i < ck->nnames; i++)
        ck->by_name[i].used = 0;
    if (!(ck->src = calloc(m->n ? m->n : 1, sizeof *ck->src)))
        return fail(err, "%s: out of memory", ck->where);
    ck->nsrc = m->n;
    for (uint32_t i = 0; i < m->n; i++)
        if (bind_one(ck, &m->t[i], &ck->src[i], err))
            return -1;
    ck->skipped = 0;
    for (uint32_t i = 0; i < ck->nnames; i++) {
        const struct wt_ck_entry *e = &ck->by_name[i];
        if (e->used)
            continue;
        if (is_language(ck, e->name, c))
            return fail(err,
                        "%s: %s: unexpected tensor: the config does not describe it (wrong "
                        "config.json for this checkpoint?)",
                        ck->files[e->file].path, e->name);
        ck->skipped++;
    }
    return 0;
}

/* ---- reading ------------------------------------------------------------------------------ */

const struct wt_ck_part *wt_ck_part_of(const struct wt_ck *ck, uint32_t i, uint64_t row)
{
    const struct wt_ck_part *p = ck->parts + ck->src[i].first;
    uint32_t lo = 0, hi = ck->src[i].count;
    while (hi - lo > 1) { /* the last part starting at or before row */
        uint32_t mid = lo + (hi - lo) / 2;
        if (p[mid].row0 <= row)
            lo = mid;
        else
            hi = mid;
    }
    return &p[lo];
}

int wt_ck_read_rows(const struct wt_ck *ck, uint32_t i, uint64_t row0, uint64_t nrows, float *dst,
                    char *err)
{
    char why[WT_ST_ERR_LEN];
    if (i >= ck->nsrc || row0 > ck->src[i].rows || nrows > ck->src[i].rows - row0)
        return fail(err, "%s: rows [%llu, +%llu) of image tensor %u are out of range", ck->where,
                    (unsigned long long)row0, (unsigned long long)nrows, i);
    const struct wt_ck_source *s = &ck->src[i];
    for (const struct wt_ck_part *p = wt_ck_part_of(ck, i, row0); nrows > 0; p++) {
        uint64_t r = row0 - p->row0, take = p->rows - r < nrows ? p->rows - r : nrows;
        if (wt_st_read_f32(&ck->files[p->file], p->t, dst, r * s->cols, take * s->cols, why))
            return fail(err, "%s", why);
        dst += take * s->cols;
        row0 += take;
        nrows -= take;
    }
    return 0;
}
