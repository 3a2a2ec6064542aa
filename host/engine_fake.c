/* engine_fake.c — a deterministic test double of the engine: no GPU, no weights.
 *
 * It exists so that every path of rt_host's protocol (streaming, stop ids, stop strings,
 * length and context limits, shutdown mid-stream, disconnects, device failures) can be
 * driven by tests on any machine, through the real binary (`rt_host --backend fake`). It keeps
 * the runtime's contract: token ids checked against the vocabulary, n + 1 <= max_seq, at most
 * max_new tokens, a stop id ends generation after it is passed on, the callback's non-zero
 * return stops at once, and generation ends with CONTEXT when prompt plus output fill max_seq.
 *
 * The generated tokens come from the prompt, so a test chooses the output by choosing the
 * prompt:
 *   echo     token i is prompt[i mod n]: a text prompt comes back as the same text
 *   reverse  token i is prompt[n - 1 - (i mod n)]
 *   walk     token i is a prompt token drawn by a PRNG seeded from the request's seed
 *
 * Configured by --fake "key=value,...":
 *   mode=echo|reverse|walk   (echo)       vocab=N       (248320, Qwen3.5's)
 *   max_seq=N                (4096)       eos=ID        (248044; -1 for none)
 *   delay_ms=N  per generated token (0)   prefill_ms=N  before the first token (0)
 *   fail_open=config|runtime  open fails with that status
 *   fail_after=N  after N tokens generated in this process, generation fails as a lost
 *                 device would (RUNTIME), and keeps failing */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host/engine.h"

enum fake_mode { FAKE_ECHO = 1, FAKE_REVERSE, FAKE_WALK };

struct engine_fake {
    struct host_engine base; /* first: the engine pointer is this struct's address */
    enum fake_mode mode;
    uint32_t vocab, max_seq;
    int32_t eos;
    uint32_t delay_ms, prefill_ms;
    uint64_t fail_after; /* 0: never */
    uint64_t generated;  /* tokens generated since open */
    int broken;          /* an injected failure happened: every later call fails */
};

static double fake_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Sleep ms milliseconds; a signal cuts the sleep short, so that the callback sees it soon. */
static void fake_sleep_ms(uint32_t ms)
{
    if (!ms)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t fake_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- configuration -------------------------------------------------------------------------- */

static int fake_u64(const char *v, uint64_t max, uint64_t *out)
{
    char *end;
    if (*v < '0' || *v > '9')
        return -1;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || x > max)
        return -1;
    *out = x;
    return 0;
}

/* Apply one key=value; returns 0, or -1 with a message (fail_open sets *fail_open). */
static int fake_set(struct engine_fake *f, const char *key, const char *val, int *fail_open,
                    char *err)
{
    uint64_t x = 0;
    if (!strcmp(key, "mode")) {
        f->mode = !strcmp(val, "echo")      ? FAKE_ECHO
                  : !strcmp(val, "reverse") ? FAKE_REVERSE
                  : !strcmp(val, "walk")    ? FAKE_WALK
                                            : 0;
        if (f->mode)
            return 0;
    } else if (!strcmp(key, "fail_open")) {
        *fail_open = !strcmp(val, "config")    ? HOST_ENGINE_ERR_CONFIG
                     : !strcmp(val, "runtime") ? HOST_ENGINE_ERR_RUNTIME
                                               : 0;
        if (*fail_open)
            return 0;
    } else if (!strcmp(key, "eos") && !strcmp(val, "-1")) {
        f->eos = -1;
        return 0;
    } else if (!strcmp(key, "eos") && !fake_u64(val, INT32_MAX, &x)) {
        f->eos = (int32_t)x;
        return 0;
    } else if (!strcmp(key, "vocab") && !fake_u64(val, INT32_MAX, &x) && x >= 1) {
        f->vocab = (uint32_t)x;
        return 0;
    } else if (!strcmp(key, "max_seq") && !fake_u64(val, 1u << 30, &x) && x >= 2) {
        f->max_seq = (uint32_t)x;
        return 0;
    } else if (!strcmp(key, "delay_ms") && !fake_u64(val, 60000, &x)) {
        f->delay_ms = (uint32_t)x;
        return 0;
    } else if (!strcmp(key, "prefill_ms") && !fake_u64(val, 60000, &x)) {
        f->prefill_ms = (uint32_t)x;
        return 0;
    } else if (!strcmp(key, "fail_after") && !fake_u64(val, UINT64_MAX, &x) && x >= 1) {
        f->fail_after = x;
        return 0;
    }
    snprintf(err, HOST_ENGINE_ERR_LEN,
             "fake engine: bad setting '%s=%s' (keys: mode, vocab, "
             "max_seq, eos, delay_ms, prefill_ms, fail_open, fail_after)",
             key, val);
    return -1;
}

/* Parse "key=value,key=value" into f. */
static int fake_parse(struct engine_fake *f, const char *spec, int *fail_open, char *err)
{
    char buf[512];
    if (strlen(spec) >= sizeof(buf)) {
        snprintf(err, HOST_ENGINE_ERR_LEN, "fake engine: settings too long");
        return -1;
    }
    strcpy(buf, spec);
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) {
            snprintf(err, HOST_ENGINE_ERR_LEN, "fake engine: '%s' is not key=value", item);
            return -1;
        }
        *eq = 0;
        if (fake_set(f, item, eq + 1, fail_open, err))
            return -1;
    }
    return 0;
}

/* ---- the engine ----------------------------------------------------------------------------- */

static void fake_close(struct host_engine *e)
{
    free(e);
}

static void fake_info(const struct host_engine *e, struct host_engine_info *info)
{
    const struct engine_fake *f = (const struct engine_fake *)e;
    memset(info, 0, sizeof(*info));
    info->backend = "fake";
    info->vocab = f->vocab;
    info->max_seq = f->max_seq;
    info->max_chunk = f->max_seq;
    if (f->eos >= 0) {
        info->n_eos = 1;
        info->eos[0] = f->eos;
    }
    snprintf(info->device, sizeof(info->device), "fake engine (test double, no GPU)");
}

static int32_t fake_pick(const struct engine_fake *f, const int32_t *prompt, uint32_t n, uint32_t i,
                         uint64_t *rng)
{
    switch (f->mode) {
    case FAKE_REVERSE:
        return prompt[n - 1 - i % n];
    case FAKE_WALK:
        return prompt[fake_rand(rng) % n];
    default:
        return prompt[i % n];
    }
}

/* Check the request as rt does: ids in range, 1 <= n and n + 1 <= max_seq, max_new >= 1. */
static enum host_engine_status fake_check(const struct engine_fake *f, const int32_t *prompt,
                                          uint32_t n, const struct host_engine_params *p, char *err)
{
    if (n < 1 || p->max_new < 1 || p->n_stop > HOST_ENGINE_MAX_STOP) {
        snprintf(err, HOST_ENGINE_ERR_LEN,
                 "fake engine: empty prompt, max_new 0 or too many "
                 "stop ids");
        return HOST_ENGINE_ERR_INPUT;
    }
    if ((uint64_t)n + 1 > f->max_seq) {
        snprintf(err, HOST_ENGINE_ERR_LEN,
                 "fake engine: prompt of %u tokens does not fit in "
                 "max_seq %u",
                 n, f->max_seq);
        return HOST_ENGINE_ERR_CONTEXT;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (prompt[i] < 0 || (uint32_t)prompt[i] >= f->vocab) {
            snprintf(err, HOST_ENGINE_ERR_LEN,
                     "fake engine: token %d at %u is outside the "
                     "vocabulary of %u",
                     prompt[i], i, f->vocab);
            return HOST_ENGINE_ERR_INPUT;
        }
    }
    return HOST_ENGINE_OK;
}

static int fake_is_stop(const struct host_engine_params *p, int32_t t)
{
    for (uint32_t i = 0; i < p->n_stop; i++)
        if (p->stop_ids[i] == t)
            return 1;
    return 0;
}

static enum host_engine_status fake_generate(struct host_engine *e, const int32_t *prompt,
                                             uint32_t n, const struct host_engine_params *p,
                                             host_engine_token_fn fn, void *ctx,
                                             struct host_engine_stats *st, char *err)
{
    struct engine_fake *f = (struct engine_fake *)e;
    uint64_t rng = p->seed;
    double t0 = fake_now_ms(), t1 = t0;

    memset(st, 0, sizeof(*st));
    st->prompt_tokens = n;
    if (f->broken) {
        snprintf(err, HOST_ENGINE_ERR_LEN, "fake engine: device lost earlier (injected)");
        return HOST_ENGINE_ERR_RUNTIME;
    }
    enum host_engine_status rc = fake_check(f, prompt, n, p, err);
    if (rc != HOST_ENGINE_OK)
        return rc;
    fake_sleep_ms(f->prefill_ms);
    for (uint32_t i = 0;; i++) {
        if (i == p->max_new) {
            st->finish = HOST_FINISH_LENGTH;
            break;
        }
        if ((uint64_t)n + i >= f->max_seq) {
            st->finish = HOST_FINISH_CONTEXT;
            break;
        }
        if (f->fail_after && f->generated >= f->fail_after) {
            f->broken = 1;
            snprintf(err, HOST_ENGINE_ERR_LEN,
                     "fake engine: device lost after %llu tokens "
                     "(injected)",
                     (unsigned long long)f->generated);
            return HOST_ENGINE_ERR_RUNTIME;
        }
        if (i > 0)
            fake_sleep_ms(f->delay_ms);
        int32_t t = fake_pick(f, prompt, n, i, &rng);
        f->generated++;
        st->new_tokens++;
        if (i == 0)
            t1 = fake_now_ms();
        if (fn(ctx, t)) {
            st->finish = HOST_FINISH_CALLER;
            break;
        }
        if (fake_is_stop(p, t)) {
            st->finish = HOST_FINISH_STOP;
            break;
        }
    }
    st->prefill_ms = t1 - t0;
    st->decode_ms = fake_now_ms() - t1;
    return HOST_ENGINE_OK;
}

static const struct host_engine_ops fake_ops = {fake_close, fake_info, fake_generate};

enum host_engine_status host_engine_open_fake(struct host_engine **out,
                                              const struct host_engine_opts *o, char *err)
{
    int fail_open = 0;
    struct engine_fake *f = calloc(1, sizeof(*f));
    *out = NULL;
    if (!f) {
        snprintf(err, HOST_ENGINE_ERR_LEN, "out of host memory");
        return HOST_ENGINE_ERR_RUNTIME;
    }
    f->base.ops = &fake_ops;
    f->mode = FAKE_ECHO;
    f->vocab = 248320;
    f->max_seq = 4096;
    f->eos = 248044;
    if (o->fake_spec && fake_parse(f, o->fake_spec, &fail_open, err)) {
        free(f);
        return HOST_ENGINE_ERR_CONFIG;
    }
    if (fail_open) {
        snprintf(err, HOST_ENGINE_ERR_LEN, "fake engine: open fails as asked (fail_open=%s)",
                 fail_open == HOST_ENGINE_ERR_CONFIG ? "config" : "runtime");
        free(f);
        return (enum host_engine_status)fail_open;
    }
    if (o->progress)
        o->progress(o->progress_ctx, "fake weights", 1, 1);
    *out = &f->base;
    return HOST_ENGINE_OK;
}
