/* plandump.c — print what a plan.bin holds: identity, regions, buffers, lifetimes, schedules.
 *
 *   plandump plan.bin                  header, identity, per-region totals, schedules
 *   plandump --buffers plan.bin        + the buffer table (offset, size, region, lifetime)
 *   plandump --timeline S plan.bin     + an ASCII lifetime chart of schedule S's activations
 *   plandump --ops S plan.bin          + every op of schedule S: kernel, launch shape, cost, stream
 *   plandump --json plan.bin           everything above as one JSON document, for scripts
 *
 * The file is checked with plan_read() first; a damaged file is reported, never dumped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan/planfile.h"
#include "weights/manifest.h"

#define TIMELINE_COLS 96

static double mib(uint64_t b) { return (double)b / (double)(1u << 20); }

static const char *region_name(const struct plan_view *p, uint32_t r)
{
    struct plan_region reg;
    if (r >= p->num_regions)
        return "?";
    plan_get_region(p, r, &reg);
    return plan_str(p, reg.name);
}

static int find_schedule(const struct plan_view *p, const char *name, struct plan_schedule *s)
{
    for (uint32_t i = 0; i < p->num_schedules; i++) {
        plan_get_schedule(p, i, s);
        if (!strcmp(plan_str(p, s->name), name))
            return (int)i;
    }
    fprintf(stderr, "plandump: no schedule %s; the plan has:", name);
    for (uint32_t i = 0; i < p->num_schedules; i++) {
        plan_get_schedule(p, i, s);
        fprintf(stderr, " %s", plan_str(p, s->name));
    }
    fprintf(stderr, "\n");
    return -1;
}

static void print_identity(const struct plan_view *p, size_t len)
{
    const struct plan_identity *id = &p->id;
    const struct model_config *c = &id->model;
    char q[32], lq[32];
    printf("plan: %zu bytes, format version %u, %u sections, made by %s\n", len, p->f.hdr.version,
           p->f.nsec, id->planner_version);
    printf("model: %u layers (%u GDN + %u attention), hidden %u, heads %u/%u x %u, GDN heads %u/%u, "
           "experts %u top-%u (width %u, shared %u), vocab %u\n",
           c->num_layers, model_count_layers(c, MODEL_LAYER_LINEAR),
           model_count_layers(c, MODEL_LAYER_FULL), c->hidden_size, c->num_heads, c->num_kv_heads,
           c->head_dim, c->lin_num_k_heads, c->lin_num_v_heads, c->num_experts,
           c->num_experts_per_tok, c->moe_inter, c->shared_inter, c->vocab_size);
    printf("max_seq %u, prefill buckets:", id->max_seq);
    for (uint32_t i = 0; i < id->num_buckets; i++)
        printf(" %u", id->buckets[i]);
    printf("\nweights: %s, lm_head %s, %.1f MiB in %u tensors, manifest hash %016llx\n",
           wt_format_name(id->quant, id->group_size, q, sizeof q),
           wt_format_name(id->lm_head_quant, id->group_size, lq, sizeof lq), mib(id->weights_bytes),
           p->num_weights, (unsigned long long)id->manifest_hash);
    printf("images:");
    for (uint32_t i = 0; i < p->num_images; i++) {
        struct plan_image im;
        plan_get_image(p, i, &im);
        printf(" sm_%u%s %.1f KiB", im.arch, im.arch == 90 ? "a" : "", (double)im.size / 1024);
    }
    printf(" (hash %016llx); %u kernels\n", (unsigned long long)id->images_hash, p->num_kernels);
    printf("arena: %.1f MiB\n", mib(id->arena_bytes));
    for (uint32_t i = 0; i < p->num_regions; i++) {
        struct plan_region r;
        plan_get_region(p, i, &r);
        uint32_t nb = 0;
        for (uint32_t k = 0; k < p->num_buffers; k++) {
            struct plan_buffer b;
            plan_get_buffer(p, k, &b);
            nb += b.region == i;
        }
        printf("  %-11s at %10.1f MiB  %10.1f MiB  %5u buffers\n", plan_str(p, r.name), mib(r.offset),
               mib(r.size), nb);
    }
    for (uint32_t i = 0; i < p->num_schedules; i++) {
        struct plan_schedule s;
        plan_get_schedule(p, i, &s);
        uint64_t bytes = 0, flops = 0, over = 0, naive = 0;
        for (uint32_t k = 0; k < s.op_count; k++) {
            struct plan_op op;
            plan_get_op(p, s.first_op + k, &op);
            bytes += op.bytes, flops += op.flops;
        }
        for (uint32_t k = 0; k < p->num_buffers; k++) {
            struct plan_buffer b;
            plan_get_buffer(p, k, &b);
            if (b.schedule == i) {
                naive += (b.size + 255) / 256 * 256;
                over = b.offset + b.size > over ? b.offset + b.size : over;
            }
        }
        struct plan_region ov;
        plan_get_region(p, p->num_regions - 1, &ov);
        printf("schedule %-14s %-7s T=%-5u L_kv %u..%u: %4u ops, %8.1f MB moved, %9.3f GFLOP; "
               "activations %.1f MiB placed (%.1f MiB side by side)\n",
               plan_str(p, s.name), s.kind == PLAN_SCHED_DECODE ? "decode" : "prefill", s.tokens,
               s.kv_min, s.kv_max, s.op_count, (double)bytes / 1e6, (double)flops / 1e9,
               over > ov.offset ? mib(over - ov.offset) : 0.0, mib(naive));
    }
}

static void print_buffers(const struct plan_view *p)
{
    printf("\n%-28s %-10s %-14s %14s %12s  lifetime (ops)\n", "buffer", "region", "schedule", "offset",
           "bytes");
    for (uint32_t i = 0; i < p->num_buffers; i++) {
        struct plan_buffer b;
        struct plan_schedule s;
        plan_get_buffer(p, i, &b);
        const char *sn = "all";
        if (b.schedule != PLAN_ALL_SCHEDULES) {
            plan_get_schedule(p, b.schedule, &s);
            sn = plan_str(p, s.name);
        }
        printf("%-28s %-10s %-14s %14llu %12llu  ", plan_str(p, b.name), region_name(p, b.region), sn,
               (unsigned long long)b.offset, (unsigned long long)b.size);
        if (b.schedule == PLAN_ALL_SCHEDULES)
            printf("whole run\n");
        else
            printf("%u..%u\n", b.first_op, b.last_op);
    }
}

static void print_timeline(const struct plan_view *p, const char *sched)
{
    struct plan_schedule s;
    int si = find_schedule(p, sched, &s);
    if (si < 0)
        exit(1);
    uint32_t n = s.op_count ? s.op_count : 1;
    printf("\nlifetimes in %s: %u ops in %u columns ('#' live), offsets from the arena start\n",
           sched, s.op_count, TIMELINE_COLS);
    for (uint32_t i = 0; i < p->num_buffers; i++) {
        struct plan_buffer b;
        plan_get_buffer(p, i, &b);
        if (b.schedule != (uint32_t)si)
            continue;
        char row[TIMELINE_COLS + 1];
        for (uint32_t c = 0; c < TIMELINE_COLS; c++) {
            uint32_t lo = (uint32_t)((uint64_t)c * n / TIMELINE_COLS);
            uint32_t hi = (uint32_t)((uint64_t)(c + 1) * n / TIMELINE_COLS);
            row[c] = (b.first_op <= (hi ? hi - 1 : 0) && b.last_op >= lo) ? '#' : '.';
        }
        row[TIMELINE_COLS] = 0;
        printf("%-22.22s %9.2f MiB +%9.2f MiB |%s|\n", plan_str(p, b.name), mib(b.offset), mib(b.size), row);
    }
}

static void print_ops(const struct plan_view *p, const char *sched)
{
    struct plan_schedule s;
    if (find_schedule(p, sched, &s) < 0)
        exit(1);
    static const char *kinds[] = {"?", "kernel", "gemm", "memset", "copy"};
    printf("\n%5s %-26s %-22s %-18s %6s %6s %12s %12s  %s\n", "op", "name", "kernel", "grid",
           "block", "relocs", "bytes", "flops", "stream");
    for (uint32_t k = 0; k < s.op_count; k++) {
        struct plan_op op;
        plan_get_op(p, s.first_op + k, &op);
        char kn[64] = "", grid[32];
        if (op.kind == PLAN_OP_KERNEL) {
            struct plan_kernel kk;
            plan_get_kernel(p, op.kernel, &kk);
            snprintf(kn, sizeof kn, "%s", plan_str(p, kk.name));
        } else {
            snprintf(kn, sizeof kn, "(%s)", kinds[op.kind < 5 ? op.kind : 0]);
        }
        snprintf(grid, sizeof grid, "%ux%ux%u", op.grid[0], op.grid[1], op.grid[2]);
        /* planfile.h: side ops run on the second stream, forked from the main one at the
         * first; a join waits for the side stream before its op */
        const char *stream = op.flags & PLAN_OP_FORK   ? "side (fork)"
                             : op.flags & PLAN_OP_SIDE ? "side"
                             : op.flags & PLAN_OP_JOIN ? "main (join)"
                                                       : "main";
        printf("%5u %-26s %-22s %-18s %6u %6u %12llu %12llu  %s\n", k, plan_str(p, op.name), kn,
               grid, op.block[0] * op.block[1] * op.block[2], op.reloc_count,
               (unsigned long long)op.bytes, (unsigned long long)op.flops, stream);
    }
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void print_json(const struct plan_view *p)
{
    const struct plan_identity *id = &p->id;
    printf("{\"version\":%u,\"planner\":", p->f.hdr.version);
    json_str(id->planner_version);
    printf(",\"max_seq\":%u,\"quant\":%u,\"group_size\":%u,\"lm_head_quant\":%u,"
           "\"arena_bytes\":%llu,\"weights_bytes\":%llu,\"manifest_hash\":\"%016llx\",\"buckets\":[",
           id->max_seq, id->quant, id->group_size, id->lm_head_quant,
           (unsigned long long)id->arena_bytes, (unsigned long long)id->weights_bytes,
           (unsigned long long)id->manifest_hash);
    for (uint32_t i = 0; i < id->num_buckets; i++)
        printf("%s%u", i ? "," : "", id->buckets[i]);
    printf("],\"regions\":[");
    for (uint32_t i = 0; i < p->num_regions; i++) {
        struct plan_region r;
        plan_get_region(p, i, &r);
        printf("%s{\"name\":", i ? "," : "");
        json_str(plan_str(p, r.name));
        printf(",\"offset\":%llu,\"size\":%llu}", (unsigned long long)r.offset, (unsigned long long)r.size);
    }
    printf("],\"buffers\":[");
    for (uint32_t i = 0; i < p->num_buffers; i++) {
        struct plan_buffer b;
        plan_get_buffer(p, i, &b);
        printf("%s{\"name\":", i ? "," : "");
        json_str(plan_str(p, b.name));
        printf(",\"region\":%u,\"schedule\":%d,\"offset\":%llu,\"size\":%llu,\"first_op\":%u,"
               "\"last_op\":%u}",
               b.region, b.schedule == PLAN_ALL_SCHEDULES ? -1 : (int)b.schedule,
               (unsigned long long)b.offset, (unsigned long long)b.size, b.first_op, b.last_op);
    }
    printf("],\"schedules\":[");
    for (uint32_t i = 0; i < p->num_schedules; i++) {
        struct plan_schedule s;
        plan_get_schedule(p, i, &s);
        printf("%s{\"name\":", i ? "," : "");
        json_str(plan_str(p, s.name));
        printf(",\"kind\":\"%s\",\"tokens\":%u,\"kv_min\":%u,\"kv_max\":%u,\"ops\":[",
               s.kind == PLAN_SCHED_DECODE ? "decode" : "prefill", s.tokens, s.kv_min, s.kv_max);
        for (uint32_t k = 0; k < s.op_count; k++) {
            struct plan_op op;
            plan_get_op(p, s.first_op + k, &op);
            printf("%s{\"name\":", k ? "," : "");
            json_str(plan_str(p, op.name));
            printf(",\"kind\":%u,\"kernel\":", op.kind);
            if (op.kind == PLAN_OP_KERNEL) {
                struct plan_kernel kk;
                plan_get_kernel(p, op.kernel, &kk);
                json_str(plan_str(p, kk.name));
            } else {
                printf("null");
            }
            printf(",\"grid\":[%u,%u,%u],\"block\":[%u,%u,%u],\"smem\":%u,\"bytes\":%llu,"
                   "\"flops\":%llu,\"flags\":%u}",
                   op.grid[0], op.grid[1], op.grid[2], op.block[0], op.block[1], op.block[2], op.smem,
                   (unsigned long long)op.bytes, (unsigned long long)op.flops, op.flags);
        }
        printf("]}");
    }
    printf("]}\n");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: plandump [--buffers] [--timeline SCHEDULE] [--ops SCHEDULE] [--json] plan.bin\n"
               "  prints the identity, per-region totals and schedules of a plan; --buffers adds\n"
               "  the buffer table, --timeline an ASCII lifetime chart of one schedule, --ops the\n"
               "  ops of one schedule with launch shapes, costs and stream (main or side branch);\n"
               "  --json prints everything as JSON\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL, *timeline = NULL, *ops = NULL;
    int buffers = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout), 0;
        else if (!strcmp(argv[i], "--buffers"))
            buffers = 1;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--timeline") && i + 1 < argc)
            timeline = argv[++i];
        else if (!strcmp(argv[i], "--ops") && i + 1 < argc)
            ops = argv[++i];
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else
            return usage(stderr), 2;
    }
    if (!path)
        return usage(stderr), 2;
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || n <= 0 || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "plandump: cannot read %s\n", path);
        return 1;
    }
    fclose(f);
    struct plan_view p;
    char err[FMT_ERR_LEN];
    enum fmt_status st = plan_read(&p, buf, (size_t)n, err);
    if (st != FMT_OK) {
        fprintf(stderr, "plandump: %s is not a valid plan: %s: %s\n", path, fmt_status_name(st), err);
        return 1;
    }
    if (json) {
        print_json(&p);
    } else {
        print_identity(&p, (size_t)n);
        if (buffers)
            print_buffers(&p);
        if (timeline)
            print_timeline(&p, timeline);
        if (ops)
            print_ops(&p, ops);
    }
    free(buf);
    return 0;
}
