/* proto.h — rt_host's wire protocol: JSON lines in, JSON lines out (host/README.md).
 *
 * A request is one JSON object on one line. host_req_parse() turns a line into a struct
 * host_req or into an error with a stable code; it checks everything that can be checked
 * without the tokenizer or the engine (types, ranges, exactly one prompt form, unknown fields).
 * Records going out are written into a growable buffer by the host_rec_* functions, each one
 * complete line ending in '\n'; text is escaped so that any bytes give valid JSON. */
#ifndef HOST_PROTO_H
#define HOST_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define HOST_ID_MAX           256 /* bytes of a request id as written in JSON */
#define HOST_MAX_STOP         8   /* stop strings per request */
#define HOST_STOP_MAX_LEN     256 /* bytes of one stop string */
#define HOST_MSG_LEN          256 /* bytes of an error message */
#define HOST_MAX_TOKENS_LIMIT (1u << 30)

/* Error codes: the names are the protocol (host_errc_name), the order is not. */
enum host_errc {
    HOST_E_NONE = 0,
    HOST_E_INVALID_JSON,
    HOST_E_LINE_TOO_LONG,
    HOST_E_INVALID_UTF8,
    HOST_E_INVALID_REQUEST,
    HOST_E_UNKNOWN_FIELD,
    HOST_E_TOKEN_OUT_OF_RANGE,
    HOST_E_CONTEXT_LENGTH_EXCEEDED,
    HOST_E_BUSY,
    HOST_E_INTERNAL,
};

struct host_error {
    enum host_errc code;
    char msg[HOST_MSG_LEN];
};

/* "invalid_json", "line_too_long", ... */
const char *host_errc_name(enum host_errc c);
/* Set *e (printf-style message); returns -1 so parsers can `return host_fail(...)`. */
int host_fail(struct host_error *e, enum host_errc c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

enum host_req_kind { HOST_REQ_GENERATE = 1, HOST_REQ_HEALTH, HOST_REQ_STATS, HOST_REQ_SHUTDOWN };
enum host_input { HOST_IN_PROMPT = 1, HOST_IN_MESSAGES, HOST_IN_TOKENS };

struct host_msg {
    char *role;    /* system, user, assistant or tool */
    char *content; /* UTF-8, may hold NUL bytes */
    size_t content_len;
};

struct host_req {
    enum host_req_kind kind;
    char id[HOST_ID_MAX + 1]; /* the id as JSON text: a string with its quotes, an integer,
                                 or "null" when absent or not yet known */
    enum host_input input;
    char *prompt; /* HOST_IN_PROMPT */
    size_t prompt_len;
    struct host_msg *msgs; /* HOST_IN_MESSAGES */
    size_t n_msgs;
    int32_t *tokens; /* HOST_IN_TOKENS: ids >= 0, range against the vocabulary checked later */
    size_t n_tokens;
    uint32_t max_tokens; /* 0: the server's default */
    float temperature;   /* default 0: greedy */
    uint32_t top_k;      /* default 0: no cut */
    float top_p;         /* default 1 */
    uint64_t seed;       /* default 0 */
    int stream;          /* default 0 */
    uint32_t n_stop;
    char *stop[HOST_MAX_STOP];
    size_t stop_len[HOST_MAX_STOP];
};

/* Parse line[0..len) (without its newline). Returns 0, or -1 with *e set; r->id is filled as
 * soon as the id is known, so an error record can carry it. Call host_req_free() either way. */
int host_req_parse(struct host_req *r, const char *line, size_t len, struct host_error *e);
void host_req_free(struct host_req *r);

/* A growable byte buffer. Zero-initialise; a failed allocation sets oom and drops writes. */
struct host_buf {
    char *p;
    size_t n, cap;
    int oom;
};

void host_buf_put(struct host_buf *b, const void *s, size_t n);
void host_buf_puts(struct host_buf *b, const char *s);
void host_buf_fmt(struct host_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s[0..n) as a JSON string with quotes; ill-formed UTF-8 becomes \ufffd. */
void host_buf_json_str(struct host_buf *b, const char *s, size_t n);
/* A finite number with 3 decimals (NaN and infinities are written as 0). */
void host_buf_json_num(struct host_buf *b, double x);
void host_buf_free(struct host_buf *b);

/* How a generation request ended, for its final record. */
struct host_result {
    const char *finish; /* "stop", "length", "context", "shutdown", "stop_string" */
    uint32_t prompt_tokens, completion_tokens;
    double ttft_ms, prefill_tok_s, decode_tok_s, queue_ms, total_ms;
    int full; /* not streamed: the record carries the text and the tokens */
    const char *text;
    size_t text_len;
    const int32_t *tokens;
    size_t n_tokens;
};

/* The records; id is JSON text (struct host_req's id). Each appends one line. */
void host_rec_error(struct host_buf *b, const char *id, enum host_errc c, const char *msg);
void host_rec_token(struct host_buf *b, const char *id, int32_t token, const char *text, size_t n);
void host_rec_text(struct host_buf *b, const char *id, const char *text, size_t n);
void host_rec_done(struct host_buf *b, const char *id, const struct host_result *res);

#endif
