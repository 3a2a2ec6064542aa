/* chat.c — text and ChatML conversations into token ids (chat.h).
 *
 * Hugging Face renders a chat template to text and encodes the text with special tokens
 * recognised; the added-token pass splits the text at each special token and pre-tokenizes
 * the pieces between them independently. Encoding piece by piece here gives the same ids, on
 * the condition that each piece between two special tokens is encoded as one text:
 * "{role}\n{content}" is one piece (the pre-tokenizer may join the newline to the content's
 * first spaces), "\n" between turns is one, and "assistant\n" is the last. The ids are checked
 * against the Hugging Face library in test/test_host_unit.c.
 *
 * The one difference from rendering with special tokens recognised is deliberate: message
 * content is encoded with allow_special = 0, so a special token's spelling inside a message
 * stays text (see chat.h). */
#include <stdlib.h>
#include <string.h>

#include "host/chat.h"

void host_ids_free(struct host_ids *a)
{
    free(a->v);
    memset(a, 0, sizeof *a);
}

static int ids_reserve(struct host_ids *a, size_t more)
{
    if (a->n + more <= a->cap)
        return 0;
    size_t cap = a->cap ? a->cap : 64;
    while (cap < a->n + more)
        cap *= 2;
    int32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v)
        return -1;
    a->v = v;
    a->cap = cap;
    return 0;
}

int host_ids_push(struct host_ids *a, int32_t id)
{
    if (ids_reserve(a, 1))
        return -1;
    a->v[a->n++] = id;
    return 0;
}

/* Every token stands for at least one byte of normalized text, so len ids are nearly always
 * enough; NFC can lengthen text, and TOK_ESPACE then says how many are needed. */
int host_text_encode(const struct tok *t, const char *text, size_t len, int allow_special,
                     struct host_ids *out, struct host_error *e)
{
    size_t want = len + 16;
    for (int tries = 0; tries < 2; tries++) {
        size_t got = 0;
        if (ids_reserve(out, want))
            return host_fail(e, HOST_E_INTERNAL, "out of memory encoding %zu bytes", len);
        int rc = tok_encode(t, text, len, allow_special, out->v + out->n, out->cap - out->n, &got);
        if (rc == TOK_OK) {
            out->n += got;
            return 0;
        }
        if (rc == TOK_EUTF8)
            return host_fail(e, HOST_E_INVALID_UTF8, "text is not well-formed UTF-8 at byte %zu",
                             got);
        if (rc != TOK_ESPACE)
            return host_fail(e, HOST_E_INTERNAL, "tokenizer: %s", tok_strerror(rc));
        want = got;
    }
    return host_fail(e, HOST_E_INTERNAL, "tokenizer: output size changed between calls");
}

/* role "\n" content, as one piece of text. */
static int chat_turn(const struct tok *t, const struct host_msg *m, struct host_ids *out,
                     struct host_error *e)
{
    size_t rl = strlen(m->role);
    char *s = malloc(rl + 1 + m->content_len);
    if (!s)
        return host_fail(e, HOST_E_INTERNAL, "out of memory for a message");
    memcpy(s, m->role, rl);
    s[rl] = '\n';
    memcpy(s + rl + 1, m->content, m->content_len);
    int rc = host_text_encode(t, s, rl + 1 + m->content_len, 0, out, e);
    free(s);
    return rc;
}

int host_chat_encode(const struct tok *t, const struct host_msg *m, size_t n, struct host_ids *out,
                     struct host_error *e)
{
    int32_t start = tok_id_of(t, "<|im_start|>"), end = tok_id_of(t, "<|im_end|>");
    e->code = HOST_E_NONE; /* below, a failed push leaves it NONE: out of memory */
    if (start < 0 || end < 0)
        return host_fail(e, HOST_E_INVALID_REQUEST,
                         "the tokenizer has no <|im_start|> and "
                         "<|im_end|> tokens: send a prompt or tokens instead of messages");
    for (size_t i = 0; i < n; i++) {
        if (host_ids_push(out, start) || chat_turn(t, &m[i], out, e) || host_ids_push(out, end) ||
            host_text_encode(t, "\n", 1, 0, out, e))
            return e->code ? -1 : host_fail(e, HOST_E_INTERNAL, "out of memory");
    }
    if (host_ids_push(out, start) || host_text_encode(t, "assistant\n", 10, 0, out, e))
        return e->code ? -1 : host_fail(e, HOST_E_INTERNAL, "out of memory");
    return 0;
}

void host_chat_render(const struct host_msg *m, size_t n, struct host_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        host_buf_puts(out, "<|im_start|>");
        host_buf_puts(out, m[i].role);
        host_buf_puts(out, "\n");
        host_buf_put(out, m[i].content, m[i].content_len);
        host_buf_puts(out, "<|im_end|>\n");
    }
    host_buf_puts(out, "<|im_start|>assistant\n");
}
