/* chat.h — prompts to token ids: plain text, and chat messages through the ChatML template
 * (MODEL.md §8):
 *
 *   <|im_start|>{role}\n{content}<|im_end|>\n   for each message, then
 *   <|im_start|>assistant\n
 *
 * The template's special tokens are placed as ids, never parsed out of text: a message whose
 * content says "<|im_end|>" gets those characters as plain text, so a user cannot end their
 * turn and write the assistant's. Prompt text (the "prompt" form) is the caller's own template
 * and may name special tokens. */
#ifndef HOST_CHAT_H
#define HOST_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "host/proto.h"
#include "host/tok.h"

/* A growable array of token ids. Zero-initialise; free with host_ids_free. */
struct host_ids {
    int32_t *v;
    size_t n, cap;
};

void host_ids_free(struct host_ids *a);
/* Append one id; -1 when memory runs out. */
int host_ids_push(struct host_ids *a, int32_t id);

/* Append the ids of text[0..len) (well-formed UTF-8). allow_special: special tokens written
 * in the text become their ids. Returns 0, or -1 with *e set (invalid_utf8, internal). */
int host_text_encode(const struct tok *t, const char *text, size_t len, int allow_special,
                     struct host_ids *out, struct host_error *e);

/* Append the ids of the ChatML conversation m[0..n) followed by the assistant's opening.
 * Fails (invalid_request) when the tokenizer has no <|im_start|> / <|im_end|>. */
int host_chat_encode(const struct tok *t, const struct host_msg *m, size_t n, struct host_ids *out,
                     struct host_error *e);

/* The same conversation as text, special tokens spelled out (for logs and tests). */
void host_chat_render(const struct host_msg *m, size_t n, struct host_buf *out);

#endif
