/* fuzz_tok_load.c — libFuzzer target for the tokenizer.json loader (host/tok_load.c).
 *
 * rt_host loads a tokenizer.json given on its command line; a damaged or hostile file must be
 * refused with a message, never crash. When a file loads, a short encode and decode of fixed
 * text must run cleanly on it. Seed: test/data/tok/mini_tokenizer.json, the committed Qwen3
 * tokenizer cut to its first 1000 tokens, the merges among them and its added tokens
 * renumbered after them (a complete file that loads, small enough to mutate).
 *
 * Run: make build/fuzz/fuzz_tok_load && build/fuzz/fuzz_tok_load -max_total_time=60 CORPUS */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host/tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[TOK_ERR_LEN];
    memset(err, 0x55, sizeof err);
    struct tok *t = tok_load_mem((const char *)data, size, err);
    if (!t) {
        if (!memchr(err, 0, sizeof err) || !err[0])
            abort(); /* a refusal leaves a terminated, non-empty message */
        return 0;
    }
    static const char text[] = "Hello world, 123 caf\xc3\xa9 <|im_end|>";
    int32_t ids[256];
    size_t n = 0, len = 0;
    char out[1024];
    int st = tok_encode(t, text, sizeof text - 1, 1, ids, 256, &n);
    if (st == 0) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || (size_t)ids[i] >= tok_vocab_size(t))
                abort();
        tok_decode(t, ids, n, 0, out, sizeof out, &len);
    }
    tok_free(t);
    return 0;
}
