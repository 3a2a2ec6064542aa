/* arena.h — placing buffers in one arena by lifetime, and checking a placement.
 *
 * The overlay region of the arena holds activations. Each lives from the first op that
 * writes it to the last op that reads it, and two buffers whose lifetimes do not intersect
 * may share bytes. Placement is TFLite Micro's greedy planner: take buffers largest first
 * (ties: earlier first use, then lower index, so the result is deterministic), and put each
 * at the lowest aligned offset that overlaps no already placed buffer whose lifetime
 * intersects its own. The verifier is independent of the placer and is run on every plan
 * before it is written, and by tests on hand-made layouts. */
#ifndef ARENA_H
#define ARENA_H

#include <stdint.h>

#define PLAN_ARENA_ERR_LEN 256

struct plan_arena_buf {
    const char *name;  /* for messages */
    uint64_t size;     /* bytes, > 0 */
    uint32_t first;    /* first op using it (inclusive) */
    uint32_t last;     /* last op using it (inclusive), >= first */
    uint64_t offset;   /* output of plan_arena_place(), input of plan_arena_verify() */
};

/* Place n buffers; align is a power of two. Returns the bytes the placement needs (the
 * highest end offset, rounded up to align), or UINT64_MAX if a size overflows. */
uint64_t plan_arena_place(struct plan_arena_buf *b, uint32_t n, uint64_t align);

/* Check a placement: every offset aligned, every buffer inside [0, total), and no two
 * buffers with intersecting lifetimes overlapping in bytes. Returns 0, or -1 with a message
 * naming the first offending buffer(s) in err. */
int plan_arena_verify(const struct plan_arena_buf *b, uint32_t n, uint64_t align, uint64_t total,
                      char *err);

/* The naive total: every buffer in its own bytes (what the placement saves against). */
uint64_t plan_arena_naive(const struct plan_arena_buf *b, uint32_t n, uint64_t align);

#endif
