/* test_fmt.c — the fmt.h container on its own: builder layout and determinism, the reader's
 * acceptance of what the builder writes (whole files and streamed prefixes), and its refusal
 * of every kind of damage: each header byte, each table byte, random payload bytes,
 * every truncation, and one structural rule at a time with the CRCs recomputed (recrc.h) so
 * that the rule itself, not a CRC, has to catch it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plan/crc.h"
#include "plan/fmt.h"
#include "test/recrc.h"
#include "test/test.h"

#define MAGIC 0x54534554u /* "TEST" */
#define VERSION 3u

#define HDR(f) offsetof(struct fmt_header, f)
#define SEC(i, f) (FMT_HEADER_SIZE + (size_t)(i) * FMT_SECTION_SIZE + offsetof(struct fmt_section, f))

struct sample {
    uint8_t *buf;       /* the prefix (the whole file without a streamed section) */
    size_t len;
    uint64_t file_size;
    uint8_t rec[48];    /* section 1: three 16-byte records */
    uint8_t raw[100];   /* section 2 */
    uint8_t tail[10];   /* section 5 */
};

/* Sections 1 (records), 2 (raw), 3 (empty raw), 5 (raw) and, if streamed, 4 (streamed). */
static void sample_build(struct sample *s, int streamed, unsigned long long seed)
{
    struct fmt_builder b;
    for (size_t i = 0; i < sizeof s->rec; i++)
        s->rec[i] = (uint8_t)test_rand(&seed);
    for (size_t i = 0; i < sizeof s->raw; i++)
        s->raw[i] = (uint8_t)test_rand(&seed);
    for (size_t i = 0; i < sizeof s->tail; i++)
        s->tail[i] = (uint8_t)test_rand(&seed);
    fmt_builder_init(&b);
    fmt_builder_add(&b, 1, 16, s->rec, sizeof s->rec);
    fmt_builder_add(&b, 2, 0, s->raw, sizeof s->raw);
    fmt_builder_add(&b, 3, 0, NULL, 0);
    if (streamed)
        fmt_builder_add_streamed(&b, 4, 5000, 4096);
    fmt_builder_add(&b, 5, 0, s->tail, sizeof s->tail);
    enum fmt_status st = fmt_builder_finish(&b, MAGIC, VERSION, &s->buf, &s->len, &s->file_size);
    fmt_builder_free(&b);
    if (st != FMT_OK) {
        printf("FAIL cannot build the sample: %s\n", fmt_status_name(st));
        exit(1);
    }
}

static enum fmt_status open_copy(const uint8_t *buf, size_t len, uint64_t file_size, char *err)
{
    struct fmt_view v;
    uint8_t *copy = malloc(len ? len : 1); /* exact size: ASan sees any read past len */
    memcpy(copy, buf, len);
    enum fmt_status st = fmt_open(&v, copy, len, file_size, MAGIC, VERSION, err);
    free(copy);
    return st;
}

static void test_names(void)
{
    int ok = 1;
    for (int s = FMT_OK; s <= FMT_ERR_IO; s++)
        for (int t = FMT_OK; t < s; t++)
            ok &= strcmp(fmt_status_name(s), fmt_status_name(t)) != 0;
    ok &= strcmp(fmt_status_name((enum fmt_status)99), "unknown status") == 0;
    CHECK(ok, "fmt_status_name: a distinct name for every status");
}

static void test_round_trip(void)
{
    struct sample s;
    struct fmt_view v;
    char err[FMT_ERR_LEN];
    const void *d;
    uint32_t n;
    sample_build(&s, 0, 1);
    CHECK(s.len == s.file_size, "builder: no streamed section, the buffer is the whole file");
    enum fmt_status st = fmt_open(&v, s.buf, s.len, s.file_size, MAGIC, VERSION, err);
    CHECK(st == FMT_OK, "reader accepts the builder's file (%s)", st ? err : "ok");
    CHECK(v.nsec == 4 && v.sec[0].id == 1 && v.sec[1].id == 2 && v.sec[2].id == 3 &&
              v.sec[3].id == 5, "table in add order: %u sections", v.nsec);
    int aligned = 1;
    for (uint32_t i = 0; i < v.nsec; i++)
        aligned &= v.sec[i].offset % FMT_ALIGN == 0;
    CHECK(aligned && v.sec[0].offset == 256 && v.sec[1].offset == 320 && v.sec[2].offset == 448 &&
              v.sec[3].offset == 448 && s.file_size == 458,
          "layout: offsets 256, 320, 448, 448, file of 458 bytes");
    st = fmt_records(&v, 1, 16, "REC", &d, &n, err);
    CHECK(st == FMT_OK && n == 3 && memcmp(d, s.rec, sizeof s.rec) == 0,
          "fmt_records: three records with their bytes");
    CHECK(fmt_find(&v, 2, &d) && memcmp(d, s.raw, sizeof s.raw) == 0 && v.sec[1].count == 0,
          "fmt_find: raw section bytes, count 0");
    CHECK(fmt_find(&v, 5, &d) && memcmp(d, s.tail, sizeof s.tail) == 0 && fmt_find(&v, 3, NULL)->size == 0,
          "fmt_find: a section after an empty one");
    CHECK(!fmt_find(&v, 9, &d) && d == NULL, "fmt_find: absent id gives NULL");
    st = fmt_records(&v, 9, 16, "NINE", &d, &n, err);
    CHECK(st == FMT_ERR_MISSING && strstr(err, "NINE") && strstr(err, "missing"),
          "fmt_records: missing section named (%s)", err);
    st = fmt_records(&v, 1, 8, "REC", &d, &n, err);
    CHECK(st == FMT_ERR_INVALID && strstr(err, "record size"), "fmt_records: wrong record size (%s)",
          err);
    free(s.buf);
}

static void test_streamed(void)
{
    struct sample s;
    struct fmt_view v;
    char err[FMT_ERR_LEN];
    const void *d;
    sample_build(&s, 1, 2);
    const struct fmt_section *sec = NULL;
    enum fmt_status st = fmt_open(&v, s.buf, s.len, s.file_size, MAGIC, VERSION, err);
    if (st == FMT_OK)
        sec = fmt_find(&v, 4, &d);
    CHECK(st == FMT_OK && sec && d == NULL && sec->offset == 4096 && sec->crc == 0 &&
              s.len == 4096 && s.file_size == 4096 + 5000,
          "streamed section last, 4096-aligned, outside the prefix (%s)", st ? err : "ok");
    uint8_t *whole = calloc(1, (size_t)s.file_size);
    memcpy(whole, s.buf, s.len);
    st = fmt_open(&v, whole, (size_t)s.file_size, s.file_size, MAGIC, VERSION, err);
    CHECK(st == FMT_OK, "reader accepts the whole streamed file too (%s)", st ? err : "ok");
    int ok = 1;
    const struct fmt_section *last = fmt_find(&v, 5, NULL);
    uint64_t last_end = last ? last->offset + last->size : 0;
    for (size_t len = 0; len < s.len; len++) {
        st = open_copy(s.buf, len, s.file_size, err);
        ok &= len < last_end ? st == FMT_ERR_TRUNCATED : st == FMT_OK;
    }
    CHECK(ok && last_end == 522, "prefix reads: truncated below the last section's end (%llu), accepted from there on",
          (unsigned long long)last_end);
    free(whole);
    free(s.buf);
}

static void test_builder(void)
{
    struct sample a, b;
    struct fmt_builder fb;
    uint8_t *out;
    size_t len;
    uint64_t fs;
    uint8_t x[10] = {0};
    sample_build(&a, 1, 7);
    sample_build(&b, 1, 7);
    CHECK(a.len == b.len && memcmp(a.buf, b.buf, a.len) == 0, "builder is deterministic");
    free(a.buf);
    free(b.buf);
    fmt_builder_init(&fb);
    fmt_builder_add(&fb, 1, 4, x, 10);
    CHECK(fmt_builder_finish(&fb, MAGIC, VERSION, &out, &len, &fs) == FMT_ERR_INVALID && !out,
          "builder: size not a multiple of the record size is refused");
    fmt_builder_free(&fb);
    fmt_builder_add(&fb, 1, 0, x, 10);
    fmt_builder_add(&fb, 1, 0, x, 10);
    CHECK(fmt_builder_finish(&fb, MAGIC, VERSION, &out, &len, &fs) == FMT_ERR_INVALID,
          "builder: a duplicate id is refused");
    fmt_builder_free(&fb);
    for (uint32_t i = 0; i <= FMT_MAX_SECTIONS; i++)
        fmt_builder_add(&fb, i, 0, x, 1);
    CHECK(fmt_builder_finish(&fb, MAGIC, VERSION, &out, &len, &fs) == FMT_ERR_INVALID,
          "builder: more than %d sections are refused", FMT_MAX_SECTIONS);
    fmt_builder_free(&fb);
    fmt_builder_add_streamed(&fb, 1, 10, 100);
    CHECK(fmt_builder_finish(&fb, MAGIC, VERSION, &out, &len, &fs) == FMT_ERR_INVALID,
          "builder: a streamed alignment that is not a power of two is refused");
    fmt_builder_free(&fb);
    CHECK(fmt_builder_finish(&fb, MAGIC, VERSION, &out, &len, &fs) == FMT_OK && len == 64 &&
              fs == 64 && fmt_open(&(struct fmt_view){0}, out, len, fs, MAGIC, VERSION, NULL) == FMT_OK,
          "builder: an empty container is a bare 64-byte header the reader accepts");
    free(out);
}

static void test_strings(void)
{
    const char pool[] = "ab\0\0cd"; /* 7 bytes: "ab", "", "", "cd" */
    CHECK(fmt_string(pool, 7, 0) == pool && fmt_string(pool, 7, 2)[0] == 0 &&
              strcmp(fmt_string(pool, 7, 4), "cd") == 0,
          "fmt_string: strings at offsets 0, 2, 4");
    CHECK(!fmt_string(pool, 7, 7) && !fmt_string(pool, 6, 4) && !fmt_string(NULL, 0, 0) &&
              !fmt_string(pool, 7, UINT32_MAX),
          "fmt_string: out of range or unterminated gives NULL");
}

/* Flip every byte of [from, to) of the file in turn; every flip must be refused. */
static void check_flips(const struct sample *s, size_t from, size_t to, const char *what)
{
    char err[FMT_ERR_LEN];
    size_t bad = SIZE_MAX;
    uint8_t *c = malloc(s->len);
    for (size_t i = from; i < to && bad == SIZE_MAX; i++) {
        memcpy(c, s->buf, s->len);
        c[i] ^= (uint8_t)(1u << (i % 8));
        if (open_copy(c, s->len, s->file_size, err) == FMT_OK)
            bad = i;
    }
    CHECK(bad == SIZE_MAX, "every %s byte flipped is refused (first accepted: %zu)", what, bad);
    free(c);
}

static void test_corruption(void)
{
    struct sample s;
    char err[FMT_ERR_LEN];
    sample_build(&s, 0, 3);
    check_flips(&s, 0, FMT_HEADER_SIZE, "header");
    check_flips(&s, FMT_HEADER_SIZE, FMT_HEADER_SIZE + 4 * FMT_SECTION_SIZE, "table");
    check_flips(&s, 0, s.len, "file");
    unsigned long long seed = 11;
    int ok = 1, trials = 0;
    uint8_t *c = malloc(s.len);
    const size_t payload[][2] = {{256, 304}, {320, 420}, {448, 458}};
    for (int t = 0; t < 300; t++) {
        const size_t *p = payload[t % 3];
        memcpy(c, s.buf, s.len);
        int flips = 1 + (int)(test_rand(&seed) % 4);
        for (int k = 0; k < flips; k++)
            c[p[0] + test_rand(&seed) % (p[1] - p[0])] ^= (uint8_t)(1 + test_rand(&seed) % 255);
        if (memcmp(c, s.buf, s.len) == 0)
            continue; /* two flips cancelled */
        ok &= open_copy(c, s.len, s.file_size, err) == FMT_ERR_SECTION_CRC;
        trials++;
    }
    CHECK(ok && trials > 250, "random payload damage: section CRC mismatch in %d trials", trials);
    ok = 1;
    for (size_t len = 0; len < s.len; len++)
        ok &= open_copy(s.buf, len, len, err) == FMT_ERR_TRUNCATED;
    CHECK(ok, "every truncation 0..%zu is reported as truncated", s.len - 1);
    free(c);
    free(s.buf);
}

/* ---- one structural rule at a time, CRCs recomputed -------------------------------------- */

struct rule {
    const char *what;
    int streamed;       /* mutate the streamed sample and read it as a prefix */
    size_t at;          /* byte offset of the field in the file */
    int width;          /* 1, 4 or 8 bytes */
    uint64_t val;
    enum fmt_status st; /* the status the reader must give */
    const char *msg;    /* and a phrase its message must contain */
};

static void poke(uint8_t *buf, size_t at, int width, uint64_t val)
{
    memcpy(buf + at, &val, (size_t)width); /* little-endian host */
}

/* Sample A: ids 1, 2, 3, 5 at 256, 320, 448, 448, file 458. Sample B adds streamed id 4
 * (table index 3) at 4096; its prefix is 4096 bytes. */
static const struct rule rules[] = {
    {"magic", 0, HDR(magic), 4, 0x11111111, FMT_ERR_MAGIC, "magic"},
    {"version", 0, HDR(version), 4, 4, FMT_ERR_VERSION, "version 4"},
    {"header_size", 0, HDR(header_size), 4, 65, FMT_ERR_INVALID, "header_size"},
    {"table_offset", 0, HDR(table_offset), 8, 128, FMT_ERR_INVALID, "section table at offset"},
    {"section_count above the limit", 0, HDR(section_count), 4, 65, FMT_ERR_BOUNDS, "section_count"},
    {"section table past the file", 0, HDR(section_count), 4, 64, FMT_ERR_BOUNDS, "ends past"},
    {"header flags", 0, HDR(flags), 4, 1, FMT_ERR_INVALID, "flags"},
    {"header reserved byte", 0, HDR(reserved) + 3, 1, 1, FMT_ERR_INVALID, "reserved"},
    {"file_size above the file", 0, HDR(file_size), 8, 458 + 64, FMT_ERR_TRUNCATED, "declares"},
    {"file_size below the file", 0, HDR(file_size), 8, 457, FMT_ERR_INVALID, "more than its header"},
    {"section flags", 0, SEC(1, flags), 4, 2, FMT_ERR_INVALID, "id 2: unknown flags"},
    {"section reserved", 0, SEC(1, reserved) + 4, 4, 7, FMT_ERR_INVALID, "id 2: reserved"},
    {"misaligned section", 0, SEC(1, offset), 8, 321, FMT_ERR_INVALID, "id 2: offset 321 is not 64-aligned"},
    {"section inside the table", 0, SEC(0, offset), 8, 192, FMT_ERR_BOUNDS, "id 1: offset 192 lies inside"},
    {"section size wraps", 0, SEC(1, size), 8, UINT64_MAX - 100, FMT_ERR_BOUNDS, "id 2: [320"},
    {"section offset wraps", 0, SEC(1, offset), 8, UINT64_MAX & ~63ull, FMT_ERR_BOUNDS, "id 2: [18446744073709551552, +100) extends past"},
    {"streamed section with a CRC", 0, SEC(1, flags), 4, FMT_SEC_STREAMED, FMT_ERR_INVALID, "id 2: streamed section with a non-zero CRC"},
    {"raw section with a count", 0, SEC(1, count), 4, 5, FMT_ERR_INVALID, "id 2: raw section with count 5"},
    {"size not count x record_size", 0, SEC(0, count), 4, 4, FMT_ERR_INVALID, "id 1: size 48 is not count 4"},
    {"duplicate section id", 0, SEC(1, id), 4, 1, FMT_ERR_INVALID, "id 1 appears twice"},
    {"overlapping sections", 0, SEC(1, offset), 8, 256, FMT_ERR_BOUNDS, "id 2 overlaps section id 1"},
    {"trailing bytes after the last section", 0, SEC(3, size), 8, 9, FMT_ERR_INVALID, "sections end at 457"},
    {"non-zero padding", 0, 310, 1, 0xAA, FMT_ERR_INVALID, "padding before section id 2"},
    {"non-streamed section beyond the prefix", 1, SEC(3, flags), 4, 0, FMT_ERR_TRUNCATED, "id 4: ends at 9096, past the 4096 bytes"},
    {"streamed section past the file", 1, SEC(3, size), 8, 5001, FMT_ERR_BOUNDS, "id 4: [4096, +5001) extends past"},
};

static void test_rules(void)
{
    struct sample a, b;
    char err[FMT_ERR_LEN];
    sample_build(&a, 0, 5);
    sample_build(&b, 1, 5);
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        const struct rule *r = &rules[i];
        const struct sample *s = r->streamed ? &b : &a;
        uint8_t *c = malloc(s->len);
        memcpy(c, s->buf, s->len);
        poke(c, r->at, r->width, r->val);
        recrc(c, s->len);
        err[0] = 0;
        enum fmt_status st = open_copy(c, s->len, s->file_size, err);
        CHECK(st == r->st && strstr(err, r->msg), "rule: %s -> %s: %s", r->what,
              fmt_status_name(st), err);
        free(c);
    }
    uint8_t *c = calloc(1, a.len + 1);
    memcpy(c, a.buf, a.len);
    enum fmt_status st = open_copy(c, a.len + 1, a.file_size, err);
    CHECK(st == FMT_ERR_INVALID && strstr(err, "longer than"), "rule: buffer longer than the file -> %s",
          err);
    free(c);
    free(a.buf);
    free(b.buf);
}

int main(void)
{
    test_names();
    test_round_trip();
    test_streamed();
    test_builder();
    test_strings();
    test_corruption();
    test_rules();
    return test_done();
}
