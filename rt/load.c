/* load.c — everything rt_open() does before the first step: read and check plan.bin, open the
 * device, load the plan's kernel image for this GPU and resolve every kernel, check the
 * weights image against the plan, make the arena and weights allocations, stream the weights
 * in through pinned staging buffers (or fill them from a seed), and patch device addresses
 * into the parameter blobs. Validate at load, run blind in the loop: after this, the step loop
 * checks only the data that arrives with a request.
 *
 * Each step releases what it took if it fails; rt_unload() releases whatever was taken. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kern/fill.h"
#include "../kern/quant.h"
#include "../plan/crc.h"
#include "../weights/wimage.h"
#include "rt_impl.h"

static double gib(uint64_t b) { return (double)b / (double)(1ull << 30); }

static uint8_t *slurp(const char *path, size_t *len, char *err)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *buf = NULL;
    if (fd < 0 || fstat(fd, &st)) {
        rt_fail(err, RT_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) {
        rt_fail(err, RT_ERR_IO, "%s: cannot read %lld bytes", path, (long long)st.st_size);
        free(buf);
        buf = NULL;
        goto out;
    }
    *len = (size_t)st.st_size;
out:
    if (fd >= 0)
        close(fd);
    return buf;
}

static enum rt_status read_plan(struct rt *r, const char *path, char *err)
{
    char why[FMT_ERR_LEN];
    if (!(r->plan_buf = slurp(path, &r->plan_len, err)))
        return RT_ERR_PLAN;
    enum fmt_status st = plan_read(&r->p, r->plan_buf, r->plan_len, why);
    if (st != FMT_OK)
        return rt_fail(err, RT_ERR_PLAN, "%s is not a valid plan (%s: %s): re-run the planner",
                       path, fmt_status_name(st), why);
    r->num_buckets = r->p.id.num_buckets;
    memcpy(r->buckets, r->p.id.buckets, sizeof r->buckets);
    return RT_OK;
}

static enum rt_status open_device(struct rt *r, int ordinal, char *err)
{
    int n = 0, major = 0, minor = 0;
    if (rt_cudrv_open(&r->d, err))
        return RT_ERR_NO_DRIVER;
    CUresult res = DRV(r, cuInit(0));
    if (res == CUDA_ERROR_NO_DEVICE)
        return rt_fail(err, RT_ERR_NO_DEVICE, "no CUDA device is present");
    if (res)
        return rt_drv_fail(r, res, RT_ERR_NO_DEVICE, err, "cuInit");
    if ((res = DRV(r, cuDeviceGetCount(&n))))
        return rt_drv_fail(r, res, RT_ERR_NO_DEVICE, err, "cuDeviceGetCount");
    if (ordinal < 0 || ordinal >= n)
        return rt_fail(err, RT_ERR_NO_DEVICE, "device %d does not exist (%d CUDA device%s)", ordinal,
                       n, n == 1 ? "" : "s");
    if ((res = DRV(r, cuDeviceGet(&r->dev, ordinal))) ||
        (res = DRV(r, cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, r->dev))) ||
        (res = DRV(r, cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, r->dev))) ||
        (res = DRV(r, cuDeviceGetName(r->info.device_name, sizeof r->info.device_name, r->dev))))
        return rt_drv_fail(r, res, RT_ERR_NO_DEVICE, err, "querying the device");
    r->info.sm = 10 * major + minor;
    if ((res = DRV(r, cuDevicePrimaryCtxRetain(&r->ctx, r->dev))))
        return rt_drv_fail(r, res, RT_ERR_NO_DEVICE, err, "cuDevicePrimaryCtxRetain");
    r->ctx_held = 1;
    if ((res = DRV(r, cuCtxSetCurrent(r->ctx))) ||
        (res = DRV(r, cuStreamCreate(&r->stream, CU_STREAM_NON_BLOCKING))))
        return rt_drv_fail(r, res, RT_ERR_NO_DEVICE, err, "setting up the context");
    return RT_OK;
}

/* The image for this GPU: the exact arch, else the same major with the highest minor below
 * (cubins run on later minors of their major); sm_90a only on sm_90. */
static enum rt_status load_module(struct rt *r, char *err)
{
    int best = -1;
    uint32_t best_arch = 0;
    char have[128] = "";
    for (uint32_t i = 0; i < r->p.num_images; i++) {
        struct plan_image im;
        plan_get_image(&r->p, i, &im);
        size_t l = strlen(have);
        snprintf(have + l, sizeof have - l, "%ssm_%u%s", l ? ", " : "", im.arch, im.arch == 90 ? "a" : "");
        int same_major = im.arch / 10 == (uint32_t)r->info.sm / 10 && im.arch <= (uint32_t)r->info.sm;
        if (im.arch == (uint32_t)r->info.sm || (same_major && im.arch != 90 && im.arch > best_arch)) {
            best = (int)i, best_arch = im.arch;
            if (im.arch == (uint32_t)r->info.sm)
                break;
        }
    }
    if (best < 0)
        return rt_fail(err, RT_ERR_ARCH,
                       "the plan has kernel images for %s but this GPU (%s) is sm_%d: re-run the "
                       "planner with --arch for it",
                       have, r->info.device_name, r->info.sm);
    struct plan_image im;
    plan_get_image(&r->p, (uint32_t)best, &im);
    CUresult res = DRV(r, cuModuleLoadData(&r->mod, r->p.image_data + im.offset));
    if (res)
        return rt_drv_fail(r, res, res == CUDA_ERROR_OUT_OF_MEMORY ? RT_ERR_NOMEM : RT_ERR_ARCH, err,
                           "loading the plan's kernel image");
    return RT_OK;
}

/* Resolve every kernel by name, check its single parameter's size when the driver can tell,
 * and every op's launch shape against the function's limits. */
static enum rt_status resolve_kernels(struct rt *r, char *err)
{
    r->fns = calloc(r->p.num_kernels ? r->p.num_kernels : 1, sizeof *r->fns);
    if (!r->fns)
        return rt_fail(err, RT_ERR_NOMEM, "out of host memory");
    for (uint32_t i = 0; i < r->p.num_kernels; i++) {
        struct plan_kernel k;
        plan_get_kernel(&r->p, i, &k);
        const char *name = plan_str(&r->p, k.name);
        CUresult res = DRV(r, cuModuleGetFunction(&r->fns[i], r->mod, name));
        if (res == CUDA_ERROR_NOT_FOUND)
            return rt_fail(err, RT_ERR_KERNEL,
                           "kernel %s is not in the plan's image for sm_%d: the plan names kernels "
                           "this build of the kernels does not have; rebuild and re-plan",
                           name, r->info.sm);
        if (res)
            return rt_drv_fail(r, res, RT_ERR_KERNEL, err, name);
        size_t off = 0, size = 0;
        if (r->d.cuFuncGetParamInfo && !r->d.cuFuncGetParamInfo(r->fns[i], 0, &off, &size) &&
            size != k.param_size)
            return rt_fail(err, RT_ERR_KERNEL,
                           "kernel %s takes %zu parameter bytes but the plan passes %u: plan and "
                           "kernels are from different builds; re-plan",
                           name, size, k.param_size);
    }
    uint32_t *smem = calloc(r->p.num_kernels ? r->p.num_kernels : 1, sizeof *smem);
    if (!smem)
        return rt_fail(err, RT_ERR_NOMEM, "out of host memory for the kernel table");
    for (uint32_t i = 0; i < r->p.num_ops; i++) {
        struct plan_op op;
        int max_threads = 0;
        plan_get_op(&r->p, i, &op);
        if (op.kind != PLAN_OP_KERNEL)
            continue;
        CUfunction f = r->fns[op.kernel];
        CUresult res = DRV(r, cuFuncGetAttribute(&max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, f));
        if (res) {
            free(smem);
            return rt_drv_fail(r, res, RT_ERR_KERNEL, err, "cuFuncGetAttribute");
        }
        if (op.block[0] * op.block[1] * op.block[2] > (uint32_t)max_threads) {
            free(smem);
            return rt_fail(err, RT_ERR_KERNEL, "op %s launches %u threads per block; the kernel allows %d",
                           plan_str(&r->p, op.name), op.block[0] * op.block[1] * op.block[2], max_threads);
        }
        if (op.smem > smem[op.kernel])
            smem[op.kernel] = op.smem;
    }
    /* any dynamic shared memory: the default cap is 48 KiB less the kernel's static share; one
     * limit a kernel, the largest its ops ask for (the ops of k_gemm_i4_tc differ in K) */
    for (uint32_t i = 0; i < r->p.num_kernels; i++) {
        CUresult res;
        if (smem[i] > 0 && (res = DRV(r, cuFuncSetAttribute(r->fns[i], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                                             (int)smem[i])))) {
            free(smem);
            return rt_drv_fail(r, res, RT_ERR_KERNEL, err, "raising the dynamic shared memory limit");
        }
    }
    free(smem);
    return RT_OK;
}

/* Tensor offsets in the weights allocation: manifest order, each 256-aligned (the layout the
 * image writer produces, checked against the image's own table when there is one). */
static enum rt_status weight_offsets(struct rt *r, char *err)
{
    uint64_t at = 0;
    r->weight_off = calloc(r->p.num_weights ? r->p.num_weights : 1, sizeof *r->weight_off);
    if (!r->weight_off)
        return rt_fail(err, RT_ERR_NOMEM, "out of host memory");
    for (uint32_t i = 0; i < r->p.num_weights; i++) {
        struct plan_weight w;
        plan_get_weight(&r->p, i, &w);
        r->weight_off[i] = at;
        at += (w.size + WT_TENSOR_ALIGN - 1) / WT_TENSOR_ALIGN * WT_TENSOR_ALIGN;
    }
    if (at != r->p.id.weights_bytes)
        return rt_fail(err, RT_ERR_PLAN, "the plan's weight manifest adds up to %llu bytes, not the "
                                         "%llu its identity states",
                       (unsigned long long)at, (unsigned long long)r->p.id.weights_bytes);
    return RT_OK;
}

CUdeviceptr rt_buffer(const struct rt *r, const char *name, uint64_t *size)
{
    /* overlay buffers of different schedules may share a name: the last schedule run wins */
    int found = -1;
    for (uint32_t i = 0; i < r->p.num_buffers; i++) {
        struct plan_buffer b;
        plan_get_buffer(&r->p, i, &b);
        if (strcmp(plan_str(&r->p, b.name), name))
            continue;
        if (found < 0 || b.schedule == r->last_sched)
            found = (int)i;
    }
    if (found < 0)
        return 0;
    struct plan_buffer b;
    plan_get_buffer(&r->p, (uint32_t)found, &b);
    if (size)
        *size = b.size;
    return r->arena + b.offset;
}

static enum rt_status alloc_memory(struct rt *r, char *err)
{
    size_t free_b = 0, total_b = 0;
    uint64_t need = r->p.id.arena_bytes + r->p.id.weights_bytes;
    CUresult res = DRV(r, cuMemGetInfo(&free_b, &total_b));
    if (res)
        return rt_drv_fail(r, res, RT_ERR_NOMEM, err, "cuMemGetInfo");
    if (need > free_b)
        return rt_fail(err, RT_ERR_NOMEM,
                       "not enough device memory on %s: the plan needs %.2f GiB (arena %.2f, "
                       "weights %.2f) and %.2f GiB of %.2f are free; lower --max-seq or "
                       "--prefill-chunk, or use a smaller weight format",
                       r->info.device_name, gib(need), gib(r->p.id.arena_bytes),
                       gib(r->p.id.weights_bytes), gib(free_b), gib(total_b));
    if ((res = DRV(r, cuMemAlloc(&r->arena, r->p.id.arena_bytes))))
        return rt_drv_fail(r, res, RT_ERR_NOMEM, err, "allocating the arena");
    if ((res = DRV(r, cuMemAlloc(&r->weights, r->p.id.weights_bytes ? r->p.id.weights_bytes : 256))))
        return rt_drv_fail(r, res, RT_ERR_NOMEM, err, "allocating the weights");
    if ((res = DRV(r, cuMemsetD8(r->arena, 0, r->p.id.arena_bytes))))
        return rt_drv_fail(r, res, RT_ERR_CUDA, err, "clearing the arena");
    /* the host side: the token ring (mapped), the prompt and per-chunk step structs (pinned) */
    r->step_slots = r->p.id.max_seq / (r->num_buckets ? r->buckets[0] : 1) + 2;
    void *ring = NULL, *steps = NULL, *toks = NULL;
    if ((res = DRV(r, cuMemHostAlloc(&ring, K_RING_SLOTS * sizeof(struct k_ring_entry),
                                     CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE))))
        return rt_drv_fail(r, res, RT_ERR_NOMEM, err, "allocating the token ring");
    r->ring = ring;
    if ((res = DRV(r, cuMemHostGetDevicePointer(&r->ring_dev, ring, 0))))
        return rt_drv_fail(r, res, RT_ERR_NOMEM, err, "mapping the token ring");
    if ((res = DRV(r, cuMemHostAlloc(&steps, r->step_slots * sizeof(struct k_step), 0))))
        return rt_drv_fail(r, res, RT_ERR_NOMEM, err, "allocating the step staging");
    r->step_host = steps;
    if ((res = DRV(r, cuMemHostAlloc(&toks, (size_t)r->p.id.max_seq * 4, 0))))
        return rt_drv_fail(r, res, RT_ERR_NOMEM, err, "allocating the prompt staging");
    r->tokens_host = toks;
    memset(r->ring, 0, K_RING_SLOTS * sizeof(struct k_ring_entry));
    return RT_OK;
}

/* ---- weights ------------------------------------------------------------------------------- */

/* Plan and image must describe the same tensors at the same offsets. */
static enum rt_status match_image(struct rt *r, const struct wt_view *v, const char *path, char *err)
{
    const char *what = NULL;
    if (!model_config_equal(&r->p.id.model, &v->cfg.model, &what))
        return rt_fail(err, RT_ERR_MISMATCH,
                       "%s is for another model than the plan (%s differs): convert the right "
                       "checkpoint or re-plan with its config.json", path, what);
    if (v->cfg.quant != r->p.id.quant || v->cfg.group_size != r->p.id.group_size ||
        v->cfg.lm_head_quant != r->p.id.lm_head_quant)
        return rt_fail(err, RT_ERR_MISMATCH,
                       "%s holds another weight format than the plan expects (quant %u/%u group "
                       "%u vs %u/%u group %u): re-plan with --quant/--lm-head to match, or convert again",
                       path, v->cfg.quant, v->cfg.lm_head_quant, v->cfg.group_size, r->p.id.quant,
                       r->p.id.lm_head_quant, r->p.id.group_size);
    if (wt_manifest_hash(v) != r->p.id.manifest_hash || v->num_tensors != r->p.num_weights ||
        v->data_size != r->p.id.weights_bytes)
        return rt_fail(err, RT_ERR_MISMATCH,
                       "%s does not hold the tensors the plan reads (manifest %016llx vs %016llx): "
                       "plan and weights come from different configs or formats",
                       path, (unsigned long long)wt_manifest_hash(v),
                       (unsigned long long)r->p.id.manifest_hash);
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        struct wt_tensor t;
        wt_get_tensor(v, i, &t);
        if (t.offset != r->weight_off[i])
            return rt_fail(err, RT_ERR_MISMATCH, "%s: tensor %s lies at %llu, not where the plan "
                                                 "expects it (%llu)",
                           path, wt_name(v, &t), (unsigned long long)t.offset,
                           (unsigned long long)r->weight_off[i]);
    }
    return RT_OK;
}

/* Stream DATA to the device through two pinned buffers, checking each tensor's CRC32C. */
static enum rt_status stream_weights(struct rt *r, int fd, const struct wt_view *v, const char *path,
                                     const struct rt_options *o, char *err)
{
    void *stage[2] = {NULL, NULL};
    CUevent done[2] = {NULL, NULL};
    enum rt_status st = RT_OK;
    CUresult res;
    uint64_t total = v->data_size, at = 0;
    uint32_t t = 0, crc = 0; /* the tensor being checksummed and its running CRC */
    struct wt_tensor cur;
    if (v->num_tensors)
        wt_get_tensor(v, 0, &cur);
    for (int i = 0; i < 2; i++) {
        if ((res = DRV(r, cuMemHostAlloc(&stage[i], RT_STAGING_BYTES, 0))) ||
            (res = DRV(r, cuEventCreate(&done[i], CU_EVENT_DISABLE_TIMING)))) {
            st = rt_drv_fail(r, res, RT_ERR_NOMEM, err, "allocating the staging buffers");
            goto out;
        }
    }
    for (int k = 0; at < total; k ^= 1) {
        uint64_t n = total - at < RT_STAGING_BYTES ? total - at : RT_STAGING_BYTES;
        if ((res = DRV(r, cuEventSynchronize(done[k])))) { /* the copy out of this buffer ended */
            st = rt_drv_fail(r, res, RT_ERR_CUDA, err, "waiting for a weights copy");
            goto out;
        }
        ssize_t got = pread(fd, stage[k], n, (off_t)(v->data_offset + at));
        if (got != (ssize_t)n) {
            st = rt_fail(err, RT_ERR_WEIGHTS, "%s: %s at byte %llu of the data: the image is truncated "
                                              "or unreadable; convert it again",
                         path, got < 0 ? strerror(errno) : "short read", (unsigned long long)at);
            goto out;
        }
        /* CRC of every tensor byte in this block; padding between tensors is skipped */
        for (uint64_t p = at; p < at + n && t < v->num_tensors;) {
            uint64_t end = cur.offset + cur.size;
            if (p < cur.offset) {
                p = cur.offset < at + n ? cur.offset : at + n;
                continue;
            }
            uint64_t upto = end < at + n ? end : at + n;
            crc = crc32c(crc, (uint8_t *)stage[k] + (p - at), upto - p);
            p = upto;
            if (p == end) {
                if (crc != cur.crc) {
                    st = rt_fail(err, RT_ERR_WEIGHTS, "%s: tensor %s is damaged (CRC mismatch): "
                                                      "convert or copy the image again",
                                 path, wt_name(v, &cur));
                    goto out;
                }
                crc = 0;
                if (++t < v->num_tensors)
                    wt_get_tensor(v, t, &cur);
            }
        }
        if ((res = DRV(r, cuMemcpyHtoDAsync(r->weights + at, stage[k], n, r->stream))) ||
            (res = DRV(r, cuEventRecord(done[k], r->stream)))) {
            st = rt_drv_fail(r, res, RT_ERR_CUDA, err, "copying weights to the device");
            goto out;
        }
        at += n;
        if (o->progress)
            o->progress(o->progress_ctx, "weights", at, total);
    }
    if ((res = DRV(r, cuStreamSynchronize(r->stream))))
        st = rt_drv_fail(r, res, RT_ERR_CUDA, err, "finishing the weights copy");
out:
    if (st != RT_OK && r->stream)
        r->d.cuStreamSynchronize(r->stream); /* no copy may still read a buffer freed below */
    for (int i = 0; i < 2; i++) {
        if (done[i])
            r->d.cuEventDestroy(done[i]);
        if (stage[i])
            r->d.cuMemFreeHost(stage[i]);
    }
    return st;
}

static enum rt_status load_weights_file(struct rt *r, const struct rt_options *o, char *err)
{
    char why[FMT_ERR_LEN];
    uint8_t head[4096];
    struct stat sb;
    enum rt_status st = RT_OK;
    uint8_t *prefix = NULL;
    int fd = open(o->weights_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb))
        return rt_fail(err, RT_ERR_WEIGHTS, "%s: %s", o->weights_path, strerror(errno));
    ssize_t got = pread(fd, head, sizeof head, 0);
    uint64_t need = got > 0 ? wt_prefix_size(head, (size_t)got) : 0;
    if (need == 0 || need > (64u << 20) || need > (uint64_t)sb.st_size) {
        st = rt_fail(err, RT_ERR_WEIGHTS, "%s is not a weights image (or its header is damaged)",
                     o->weights_path);
        goto out;
    }
    prefix = malloc(need);
    struct wt_view v;
    enum fmt_status fs;
    if (!prefix || pread(fd, prefix, need, 0) != (ssize_t)need ||
        (fs = wt_read(&v, prefix, need, (uint64_t)sb.st_size, why)) != FMT_OK) {
        st = rt_fail(err, RT_ERR_WEIGHTS, "%s is not a valid weights image (%s): convert it again",
                     o->weights_path, prefix ? why : "out of memory");
        goto out;
    }
    if ((st = match_image(r, &v, o->weights_path, err)) == RT_OK)
        st = stream_weights(r, fd, &v, o->weights_path, o, err);
out:
    free(prefix);
    close(fd);
    return st;
}

/* Synthetic weights: every tensor filled on the device from the seed with the distribution the
 * plan gives it (plan_weight.synth); INT4 nibbles are random with q - 8 symmetric about zero
 * (k_fill_i4), their scales drawn so the dequantized weights have a sensible spread. */
static enum rt_status fill_weights(struct rt *r, uint64_t seed, char *err)
{
    CUfunction fb, ff, fu, fi;
    CUresult res;
    int sms = 0;
    if ((res = DRV(r, cuModuleGetFunction(&fb, r->mod, "k_fill_bf16"))) ||
        (res = DRV(r, cuModuleGetFunction(&ff, r->mod, "k_fill_f32"))) ||
        (res = DRV(r, cuModuleGetFunction(&fu, r->mod, "k_fill_u32"))) ||
        (res = DRV(r, cuModuleGetFunction(&fi, r->mod, "k_fill_i4"))) ||
        (res = DRV(r, cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, r->dev))))
        return rt_drv_fail(r, res, RT_ERR_KERNEL, err, "finding the fill kernels");
    for (uint32_t i = 0; i < r->p.num_weights; i++) {
        struct plan_weight w;
        plan_get_weight(&r->p, i, &w);
        uint32_t c16 = w.synth >> 16, h16 = w.synth & 0xFFFF, cu = c16 << 16, hu = h16 << 16;
        float center, half;
        memcpy(&center, &cu, 4), memcpy(&half, &hu, 4);
        CUdeviceptr base = r->weights + r->weight_off[i];
        struct k_fill_params p = {.seed = seed ^ ((uint64_t)i << 32), .scale = half, .center = center};
        /* floats get their distribution, integer tensors random words */
        CUfunction f = w.dtype == PLAN_DTYPE_F32 ? ff : w.dtype == PLAN_DTYPE_BF16 ? fb : fu;
        if (w.layout == K_LAYOUT_I4_ROWS) { /* nibbles (k_fill_i4: q - 8 zero-mean); scales */
            uint64_t mats = w.ndim == 3 ? w.shape[0] : 1, rows = w.shape[w.ndim - 2], cols = w.shape[w.ndim - 1];
            uint64_t nib = k_i4_nibble_bytes(mats, rows, cols);
            struct k_fill_params q = {.dst = base, .n = nib / 4, .seed = p.seed + 1};
            void *qa[] = {&q};
            if ((res = DRV(r, cuLaunchKernel(fi, 8u * (unsigned)sms, 1, 1, 256, 1, 1, 0, r->stream, qa, NULL))))
                return rt_drv_fail(r, res, RT_ERR_CUDA, err, "filling synthetic weights");
            p.dst = base + nib, p.n = (w.size - nib) / 2, f = fb;
        } else {
            p.dst = base, p.n = w.size / (f == fb ? 2 : 4);
        }
        void *args[] = {&p};
        if ((res = DRV(r, cuLaunchKernel(f, 8u * (unsigned)sms, 1, 1, 256, 1, 1, 0, r->stream, args, NULL))))
            return rt_drv_fail(r, res, RT_ERR_CUDA, err, "filling synthetic weights");
    }
    if ((res = DRV(r, cuStreamSynchronize(r->stream))))
        return rt_drv_fail(r, res, RT_ERR_CUDA, err, "filling synthetic weights");
    return RT_OK;
}

/* ---- relocation ---------------------------------------------------------------------------- */

static enum rt_status relocate(struct rt *r, char *err)
{
    r->blobs = malloc(r->p.params_size ? r->p.params_size : 1);
    r->ops = calloc(r->p.num_ops ? r->p.num_ops : 1, sizeof *r->ops);
    if (!r->blobs || !r->ops)
        return rt_fail(err, RT_ERR_NOMEM, "out of host memory");
    memcpy(r->blobs, r->p.params, r->p.params_size);
    for (uint32_t i = 0; i < r->p.num_ops; i++) {
        struct plan_op op;
        plan_get_op(&r->p, i, &op);
        struct rt_op *o = &r->ops[i];
        o->kind = op.kind;
        o->fn = op.kind == PLAN_OP_KERNEL ? r->fns[op.kernel] : NULL;
        memcpy(o->grid, op.grid, sizeof o->grid);
        memcpy(o->block, op.block, sizeof o->block);
        o->smem = op.smem;
        o->flags = op.flags;
        o->params = r->blobs + op.param_offset;
        o->size = op.param_size;
        for (uint32_t k = 0; k < op.reloc_count; k++) {
            struct plan_reloc rl;
            plan_get_reloc(&r->p, op.reloc_first + k, &rl);
            uint64_t addr = rl.offset;
            if (rl.base == PLAN_BASE_ARENA)
                addr += r->arena;
            else if (rl.base == PLAN_BASE_WEIGHT)
                addr += r->weights + r->weight_off[rl.index];
            else
                addr += r->ring_dev;
            memcpy((uint8_t *)o->params + rl.param_offset, &addr, 8);
        }
    }
    return RT_OK;
}

/* Buffers rt itself fills, found by name; cuBLAS bound to its workspace when GEMMs exist; the
 * side stream when the plan has side branches (and a second cuBLAS handle for their GEMMs). */
static enum rt_status bind_buffers(struct rt *r, int no_branches, char *err)
{
    uint64_t n = 0, ws = 0;
    CUdeviceptr step = rt_buffer(r, "step", &n);
    if (!step || n < sizeof(struct k_step))
        return rt_fail(err, RT_ERR_PLAN, "the plan has no step buffer: re-run the planner");
    r->step_off = step - r->arena;
    CUdeviceptr tok = rt_buffer(r, "tokens_in", &r->tokens_cap);
    r->tokens_off = tok ? tok - r->arena : 0;
    for (uint32_t i = 0; i < r->p.num_regions; i++) {
        struct plan_region reg;
        plan_get_region(&r->p, i, &reg);
        if (reg.kind == PLAN_REGION_PERSISTENT)
            r->persist_off = reg.offset, r->persist_size = reg.size;
    }
    int gemms = 0, side_gemms = 0;
    for (uint32_t i = 0; i < r->p.num_ops; i++) {
        gemms |= r->ops[i].kind == PLAN_OP_GEMM;
        side_gemms |= r->ops[i].kind == PLAN_OP_GEMM && (r->ops[i].flags & PLAN_OP_SIDE);
        r->branches |= (r->ops[i].flags & PLAN_OP_SIDE) != 0;
    }
    r->branches &= !no_branches;
    if (r->branches) { /* the side stream and the events that fork and join it */
        CUresult res;
        if ((res = DRV(r, cuStreamCreate(&r->side, CU_STREAM_NON_BLOCKING))) ||
            (res = DRV(r, cuEventCreate(&r->fork_ev, CU_EVENT_DISABLE_TIMING))) ||
            (res = DRV(r, cuEventCreate(&r->join_ev, CU_EVENT_DISABLE_TIMING))))
            return rt_drv_fail(r, res, RT_ERR_CUDA, err, "creating the side stream");
    }
    if (!gemms)
        return RT_OK;
    CUdeviceptr wsp = rt_buffer(r, "cublas.workspace", &ws);
    if (!wsp)
        return rt_fail(err, RT_ERR_PLAN, "the plan has GEMM ops but no cublas.workspace buffer");
    if (rt_inject(r))
        return rt_fail(err, RT_ERR_CUBLAS, "cuBLAS setup failed (injected)");
    if (rt_cublas_open(&r->blas, r->stream, wsp, ws, err))
        return RT_ERR_CUBLAS;
    if (!side_gemms)
        return RT_OK;
    /* side GEMMs run beside the main stream's: a handle and a workspace of their own (also
     * with no_branches, so that cuBLAS picks the same kernels: exec.c rt_launch_op) */
    if (!(wsp = rt_buffer(r, "cublas.workspace_side", &ws)))
        return rt_fail(err, RT_ERR_PLAN,
                       "the plan has side-branch GEMM ops but no cublas.workspace_side buffer");
    if (rt_inject(r))
        return rt_fail(err, RT_ERR_CUBLAS, "cuBLAS setup failed (injected)");
    if (rt_cublas_open(&r->blas_side, r->branches ? r->side : r->stream, wsp, ws, err))
        return RT_ERR_CUBLAS;
    return RT_OK;
}

enum rt_status rt_load(struct rt *r, const struct rt_options *o, char *err)
{
    enum rt_status st;
    if ((st = read_plan(r, o->plan_path, err)) || (st = open_device(r, o->device, err)) ||
        (st = load_module(r, err)) || (st = resolve_kernels(r, err)) ||
        (st = weight_offsets(r, err)) || (st = alloc_memory(r, err)))
        return st;
    st = o->synthetic ? fill_weights(r, o->synthetic_seed, err) : load_weights_file(r, o, err);
    if (st || (st = relocate(r, err)) || (st = bind_buffers(r, o->no_branches, err)))
        return st;
    return rt_build_graphs(r, o->no_graphs, o->no_pdl, err);
}

void rt_unload(struct rt *r)
{
    if (r->stream)
        r->d.cuStreamSynchronize(r->stream);
    rt_free_graphs(r);
    if (r->side)
        r->d.cuStreamSynchronize(r->side);
    rt_cublas_close(&r->blas);
    rt_cublas_close(&r->blas_side);
    if (r->ring)
        r->d.cuMemFreeHost(r->ring);
    if (r->step_host)
        r->d.cuMemFreeHost(r->step_host);
    if (r->tokens_host)
        r->d.cuMemFreeHost(r->tokens_host);
    if (r->weights)
        r->d.cuMemFree(r->weights);
    if (r->arena)
        r->d.cuMemFree(r->arena);
    if (r->mod)
        r->d.cuModuleUnload(r->mod);
    if (r->stream)
        r->d.cuStreamDestroy(r->stream);
    if (r->side)
        r->d.cuStreamDestroy(r->side);
    if (r->fork_ev)
        r->d.cuEventDestroy(r->fork_ev);
    if (r->join_ev)
        r->d.cuEventDestroy(r->join_ev);
    if (r->ctx_held)
        r->d.cuDevicePrimaryCtxRelease(r->dev);
    rt_cudrv_close(&r->d);
    free(r->plan_buf), free(r->fns), free(r->ops), free(r->blobs), free(r->weight_off);
    free(r->sched);
}
