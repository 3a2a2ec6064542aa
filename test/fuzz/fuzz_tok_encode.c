/* fuzz_tok_encode.c — libFuzzer target for the tokenizer's encode and decode (host/tok.c).
 *
 * rt_host feeds user text straight into the encoder, so any bytes must give either ids or a
 * clean TOK_EUTF8 at the first ill-formed byte, never a crash. For well-formed text encoded
 * without special tokens, decoding the ids must give back NFC(text) exactly (byte-level BPE
 * loses nothing), or, where an added token is followed by a combining mark (added tokens are
 * matched before normalisation), text whose NFC is NFC(text), and the streaming decoder, fed one id at a time, must only ever emit
 * well-formed UTF-8 and in total the same text. The tokenizer is the committed Qwen3 one;
 * the first input byte picks whether special tokens are recognised.
 *
 * Run from the repository root: make build/fuzz/fuzz_tok_encode && build/fuzz/fuzz_tok_encode -max_total_time=60 CORPUS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/tok.h"
#include "host/unicode.h"

static struct tok *tk;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char err[TOK_ERR_LEN];
    tk = tok_load("test/data/tok/qwen3_tokenizer.json", err);
    if (!tk) {
        fprintf(stderr, "fuzz_tok_encode: %s (run from the repository root)\n", err);
        abort();
    }
    return 0;
}

static void stream_check(const int32_t *ids, size_t n, const char *want, size_t want_len)
{
    struct tok_stream s;
    size_t cap = tok_stream_cap(tk), len, total = 0;
    char *chunk = malloc(cap), *all = malloc(want_len + 4 * n + 8);
    tok_stream_init(&s, tk, 0);
    for (size_t i = 0; i < n; i++) {
        if (tok_stream_push(&s, ids[i], chunk, &len) || len > cap || uni_utf8_check(chunk, len) != len)
            abort();
        memcpy(all + total, chunk, len);
        total += len;
    }
    tok_stream_flush(&s, chunk, &len);
    if (uni_utf8_check(chunk, len) != len)
        abort();
    memcpy(all + total, chunk, len);
    total += len;
    if (total != want_len || memcmp(all, want, total)) /* valid text: nothing was replaced */
        abort();
    free(chunk);
    free(all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 4096)
        return 0;
    int special = data[0] & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1, n = 0, cap = 2 * len + 16;
    int32_t *ids = malloc(sizeof *ids * cap);
    int st = tok_encode(tk, text, len, special, ids, cap, &n);
    if (st == TOK_EUTF8) {
        if (n >= len || uni_utf8_check(text, len) != n) /* the offset of the first bad byte */
            abort();
        free(ids);
        return 0;
    }
    if (st != 0 || n > cap)
        abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= tok_vocab_size(tk))
            abort();
    if (!special) {
        struct uni_buf nfc = {0};
        size_t dl = 0, dcap = 4 * len + 64;
        char *dec = malloc(dcap);
        if (uni_nfc(text, len, &nfc) || tok_decode(tk, ids, n, 0, dec, dcap, &dl))
            abort();
        if (dl != nfc.n || memcmp(dec, nfc.p, dl)) {
            /* added tokens are matched in the raw text, before normalisation (as transformers
             * does for tokens with normalized: false), so a combining mark right after one
             * stays uncomposed: "</tool_call>" + U+0338 decodes as such, where NFC of the
             * whole text makes "</tool_call" + U+226F. Then the decoded text must still
             * normalise to NFC(text): nothing lost or changed */
            struct uni_buf again = {0};
            if (uni_nfc(dec, dl, &again) || again.n != nfc.n || memcmp(again.p, nfc.p, nfc.n))
                abort();
            uni_buf_free(&again);
        }
        stream_check(ids, n, dec, dl);
        free(dec);
        uni_buf_free(&nfc);
    }
    free(ids);
    return 0;
}
