/* arena.c — greedy-by-size, first-fit placement by lifetime, and its verifier (arena.h). */
#include "arena.h"

#include <stdio.h>
#include <stdlib.h>

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

static int lifetimes_meet(const struct plan_arena_buf *x, const struct plan_arena_buf *y)
{
    return x->first <= y->last && y->first <= x->last;
}

/* order of placement: size descending, then first use, then index */
static const struct plan_arena_buf *sort_base;
static int by_size(const void *a, const void *b)
{
    const struct plan_arena_buf *x = &sort_base[*(const uint32_t *)a];
    const struct plan_arena_buf *y = &sort_base[*(const uint32_t *)b];
    if (x->size != y->size)
        return x->size < y->size ? 1 : -1;
    if (x->first != y->first)
        return x->first < y->first ? -1 : 1;
    return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

static const struct plan_arena_buf *offset_base;
static int by_offset(const void *a, const void *b)
{
    const struct plan_arena_buf *x = &offset_base[*(const uint32_t *)a];
    const struct plan_arena_buf *y = &offset_base[*(const uint32_t *)b];
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

uint64_t plan_arena_place(struct plan_arena_buf *b, uint32_t n, uint64_t align)
{
    uint32_t *order = malloc(sizeof *order * (n ? n : 1));
    uint32_t *live = malloc(sizeof *live * (n ? n : 1)); /* placed, lifetime intersecting */
    uint64_t total = 0;
    if (!order || !live) {
        total = UINT64_MAX;
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        order[i] = i;
        if (b[i].size > UINT64_MAX / 4) {
            total = UINT64_MAX;
            goto out;
        }
    }
    sort_base = b;
    qsort(order, n, sizeof *order, by_size);
    for (uint32_t k = 0; k < n; k++) {
        struct plan_arena_buf *cur = &b[order[k]];
        uint32_t nlive = 0;
        for (uint32_t j = 0; j < k; j++)
            if (lifetimes_meet(cur, &b[order[j]]))
                live[nlive++] = order[j];
        offset_base = b;
        qsort(live, nlive, sizeof *live, by_offset);
        /* first fit: walk the conflicting buffers in offset order, skip past each one
         * that the candidate range would touch */
        uint64_t at = 0;
        for (uint32_t j = 0; j < nlive; j++) {
            const struct plan_arena_buf *p = &b[live[j]];
            if (at + cur->size <= p->offset)
                break;
            if (p->offset + p->size > at)
                at = align_up(p->offset + p->size, align);
        }
        cur->offset = at;
        if (align_up(at + cur->size, align) > total)
            total = align_up(at + cur->size, align);
    }
out:
    free(order);
    free(live);
    return total;
}

int plan_arena_verify(const struct plan_arena_buf *b, uint32_t n, uint64_t align, uint64_t total,
                      char *err)
{
    for (uint32_t i = 0; i < n; i++) {
        if (b[i].offset % align || b[i].size == 0 || b[i].first > b[i].last ||
            b[i].offset > total || b[i].size > total - b[i].offset) {
            snprintf(err, PLAN_ARENA_ERR_LEN,
                     "buffer %s [%llu, +%llu) is misaligned, empty, outside the arena of %llu "
                     "bytes, or has an inverted lifetime",
                     b[i].name, (unsigned long long)b[i].offset, (unsigned long long)b[i].size,
                     (unsigned long long)total);
            return -1;
        }
    }
    /* every pair: O(n^2), fine for the few thousand buffers of a plan and obviously right */
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = i + 1; j < n; j++) {
            const struct plan_arena_buf *x = &b[i], *y = &b[j];
            int bytes_meet = x->offset < y->offset + y->size && y->offset < x->offset + x->size;
            if (bytes_meet && lifetimes_meet(x, y)) {
                snprintf(err, PLAN_ARENA_ERR_LEN,
                         "buffers %s [%llu, +%llu) ops %u..%u and %s [%llu, +%llu) ops %u..%u "
                         "are live at the same time and overlap",
                         x->name, (unsigned long long)x->offset, (unsigned long long)x->size,
                         x->first, x->last, y->name, (unsigned long long)y->offset,
                         (unsigned long long)y->size, y->first, y->last);
                return -1;
            }
        }
    return 0;
}

uint64_t plan_arena_naive(const struct plan_arena_buf *b, uint32_t n, uint64_t align)
{
    uint64_t t = 0;
    for (uint32_t i = 0; i < n; i++)
        t += align_up(b[i].size, align);
    return t;
}
