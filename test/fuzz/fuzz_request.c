/* fuzz_request.c — libFuzzer target for rt_host's request parser (host/proto.c).
 *
 * Any line a client sends must parse to a request or to an error record, never crash, and
 * leave a request that is safe to free. When it parses, the fields must hold what the protocol
 * promises: a known kind, an id that is JSON text, stop strings within their limits, and the
 * error record built from a refusal must itself be one line.
 *
 * Run: make build/fuzz/fuzz_request && build/fuzz/fuzz_request -max_total_time=60 CORPUS */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct host_req r;
    struct host_error e;
    memset(&e, 0, sizeof e);
    if (host_req_parse(&r, (const char *)data, size, &e) == 0) {
        if (r.kind < HOST_REQ_GENERATE || r.kind > HOST_REQ_SHUTDOWN || r.n_stop > HOST_MAX_STOP)
            abort();
        for (uint32_t i = 0; i < r.n_stop; i++)
            if (!r.stop[i] || r.stop_len[i] > HOST_STOP_MAX_LEN)
                abort();
        if (!memchr(r.id, 0, sizeof r.id))
            abort();
    } else {
        struct host_buf b;
        memset(&b, 0, sizeof b);
        if (e.code == HOST_E_NONE || !memchr(e.msg, 0, sizeof e.msg))
            abort();
        host_rec_error(&b, r.id, e.code, e.msg);
        /* one record, one line: a single newline, at the end */
        if (!b.oom && (b.n == 0 || b.p[b.n - 1] != '\n' || memchr(b.p, '\n', b.n - 1)))
            abort();
        host_buf_free(&b);
    }
    host_req_free(&r);
    return 0;
}
