/* engine_rt.c — the engine on the real runtime (rt/rt.h): plan.bin and a weights image (or
 * synthetic weights) on one GPU.
 *
 * A thin adapter: options and sampling parameters are copied field by field, and rt's
 * statuses are folded into the engine's four outcomes. The fold follows rt_status_restartable:
 * a status rt calls restartable (a lost context, a transient allocation failure) becomes
 * RUNTIME, every other load or run failure becomes CONFIG, so rt_host's exit code tells the
 * supervisor whether restarting can help. At run time a bad token id (RT_ERR_ARG) and a
 * prompt that does not fit (RT_ERR_CONTEXT) are the request's fault and are answered as such;
 * rt_host checks both before calling, so these are a second line of defence. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/engine.h"
#include "rt/rt.h"

struct engine_rt {
    struct host_engine base; /* first: the engine pointer is this struct's address */
    struct rt *rt;
    struct rt_info info;
};

static void ert_close(struct host_engine *e)
{
    struct engine_rt *x = (struct engine_rt *)e;
    rt_close(x->rt);
    free(x);
}

static void ert_info(const struct host_engine *e, struct host_engine_info *info)
{
    const struct engine_rt *x = (const struct engine_rt *)e;
    const struct rt_info *ri = &x->info;
    memset(info, 0, sizeof(*info));
    info->backend = "rt";
    info->vocab = ri->model.vocab_size;
    info->max_seq = ri->max_seq;
    info->max_chunk = ri->max_chunk;
    info->n_eos = ri->model.num_eos < HOST_ENGINE_MAX_EOS ? ri->model.num_eos : HOST_ENGINE_MAX_EOS;
    for (uint32_t i = 0; i < info->n_eos; i++)
        info->eos[i] = ri->model.eos_ids[i];
    snprintf(info->device, sizeof(info->device), "%s (sm_%d)", ri->device_name, ri->sm);
    info->arena_bytes = ri->arena_bytes;
    info->weights_bytes = ri->weights_bytes;
    info->load_ms = ri->load_ms;
}

/* rt's status to the engine's: what the caller must do about it. */
static enum host_engine_status ert_status(enum rt_status s, int at_run_time)
{
    if (s == RT_OK)
        return HOST_ENGINE_OK;
    if (at_run_time && s == RT_ERR_ARG)
        return HOST_ENGINE_ERR_INPUT;
    if (at_run_time && s == RT_ERR_CONTEXT)
        return HOST_ENGINE_ERR_CONTEXT;
    return rt_status_restartable(s) ? HOST_ENGINE_ERR_RUNTIME : HOST_ENGINE_ERR_CONFIG;
}

static uint32_t ert_finish(uint32_t f)
{
    switch (f) {
    case RT_FINISH_STOP:
        return HOST_FINISH_STOP;
    case RT_FINISH_LENGTH:
        return HOST_FINISH_LENGTH;
    case RT_FINISH_CONTEXT:
        return HOST_FINISH_CONTEXT;
    default:
        return HOST_FINISH_CALLER;
    }
}

static enum host_engine_status ert_generate(struct host_engine *e, const int32_t *prompt,
                                            uint32_t n, const struct host_engine_params *p,
                                            host_engine_token_fn fn, void *ctx,
                                            struct host_engine_stats *st, char *err)
{
    struct engine_rt *x = (struct engine_rt *)e;
    struct rt_sampling s;
    struct rt_stats rs;
    char rerr[RT_ERR_LEN] = "";

    memset(&s, 0, sizeof(s));
    s.temperature = p->temperature;
    s.top_k = p->top_k;
    s.top_p = p->top_p;
    s.seed = p->seed;
    s.max_new = p->max_new;
    s.n_stop = p->n_stop;
    for (uint32_t i = 0; i < p->n_stop && i < HOST_ENGINE_MAX_STOP; i++)
        s.stop_ids[i] = p->stop_ids[i];
    memset(&rs, 0, sizeof(rs));
    enum rt_status rc = rt_generate(x->rt, prompt, n, &s, fn, ctx, &rs, rerr);
    memset(st, 0, sizeof(*st));
    st->prompt_tokens = rs.prompt_tokens;
    st->new_tokens = rs.new_tokens;
    st->finish = ert_finish(rs.finish);
    st->prefill_ms = rs.prefill_ms;
    st->decode_ms = rs.decode_ms;
    if (rc != RT_OK)
        snprintf(err, HOST_ENGINE_ERR_LEN, "%s: %s", rt_status_name(rc), rerr);
    return ert_status(rc, 1);
}

static const struct host_engine_ops ert_ops = {ert_close, ert_info, ert_generate};

enum host_engine_status host_engine_open_rt(struct host_engine **out,
                                            const struct host_engine_opts *o, char *err)
{
    struct rt_options ro;
    char rerr[RT_ERR_LEN] = "";
    struct engine_rt *x;

    *out = NULL;
    x = calloc(1, sizeof(*x));
    if (!x) {
        snprintf(err, HOST_ENGINE_ERR_LEN, "out of host memory");
        return HOST_ENGINE_ERR_RUNTIME;
    }
    memset(&ro, 0, sizeof(ro));
    ro.plan_path = o->plan_path;
    ro.weights_path = o->synthetic ? NULL : o->weights_path;
    ro.synthetic = o->synthetic;
    ro.synthetic_seed = o->synthetic_seed;
    ro.device = o->device;
    ro.no_graphs = o->no_graphs;
    ro.no_branches = o->no_branches;
    ro.progress = o->progress;
    ro.progress_ctx = o->progress_ctx;
    enum rt_status rc = rt_open(&x->rt, &ro, rerr);
    if (rc != RT_OK) {
        snprintf(err, HOST_ENGINE_ERR_LEN, "%s: %s", rt_status_name(rc), rerr);
        free(x);
        return ert_status(rc, 0);
    }
    rt_get_info(x->rt, &x->info);
    x->base.ops = &ert_ops;
    *out = &x->base;
    return HOST_ENGINE_OK;
}
