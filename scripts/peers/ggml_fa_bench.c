// Decode attention through ggml's CPU flash attention (ggml_flash_attn_ext, the kernel
// llama.cpp runs), at the grid points of `pagedattn bench kernels`: 32 query heads x 128,
// one query token per sequence, K/V contiguous per sequence, f32, f16 or bf16 storage.
//
// Built and run by scripts/peers/ggml.sh. Usage: ggml_fa_bench THREADS f32|f16|bf16 LLC_MIB
// Prints one line per point: batch context kv_heads median_ms min_ms max_ms sets
//
// Timing matches pagedattn's: K/V sets rotate so that every decode point whose K/V exceed
// 4 MiB reads from DRAM (2.5x the last-level cache in all), a persistent thread pool (as
// llama.cpp keeps one), the median of repetitions after a warm-up.

#include "ggml.h"
#include "ggml-cpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fill(struct ggml_tensor *t, unsigned *seed) {
    size_t n = ggml_nelements(t);
    if (t->type == GGML_TYPE_F32) {
        float *p = (float *)t->data;
        for (size_t i = 0; i < n; i++) {
            *seed = *seed * 1664525u + 1013904223u;
            p[i] = (float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f;
        }
    } else if (t->type == GGML_TYPE_F16) {
        ggml_fp16_t *p = (ggml_fp16_t *)t->data;
        for (size_t i = 0; i < n; i++) {
            *seed = *seed * 1664525u + 1013904223u;
            p[i] = ggml_fp32_to_fp16((float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f);
        }
    } else {
        ggml_bf16_t *p = (ggml_bf16_t *)t->data;
        for (size_t i = 0; i < n; i++) {
            *seed = *seed * 1664525u + 1013904223u;
            p[i] = ggml_fp32_to_bf16((float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f);
        }
    }
}

enum { HEADS = 32, DIM = 128, MAX_SETS = 64, REPS = 15 };

static void point(struct ggml_threadpool *pool, int threads, enum ggml_type type, double llc,
                  int batch, int context, int kv_heads) {
    size_t elt = ggml_type_size(type);
    double bytes = 2.0 * batch * context * kv_heads * DIM * elt;
    int sets = 1;
    if (bytes >= 4.0 * (1 << 20)) {
        sets = (int)ceil(llc * 2.5 / bytes);
        if (sets < 1) sets = 1;
        if (sets > MAX_SETS) sets = MAX_SETS;
    }
    size_t mem = (size_t)(bytes * sets) + (size_t)sets * 4 * batch * HEADS * DIM * 4 +
                 (size_t)sets * 8 * ggml_tensor_overhead() + ggml_graph_overhead() * sets +
                 (64u << 20);
    struct ggml_init_params ip = {mem, NULL, false};
    struct ggml_context *ctx = ggml_init(ip);
    if (!ctx) {
        fprintf(stderr, "ggml_init failed for %zu bytes\n", mem);
        exit(1);
    }
    struct ggml_cgraph *graphs[MAX_SETS];
    struct ggml_cplan plans[MAX_SETS];
    unsigned seed = (unsigned)(batch * 7919 + context);
    const float scale = 1.0f / sqrtf((float)DIM);
    for (int s = 0; s < sets; s++) {
        struct ggml_tensor *q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, DIM, 1, HEADS, batch);
        struct ggml_tensor *k = ggml_new_tensor_4d(ctx, type, DIM, context, kv_heads, batch);
        struct ggml_tensor *v = ggml_new_tensor_4d(ctx, type, DIM, context, kv_heads, batch);
        fill(q, &seed);
        fill(k, &seed);
        fill(v, &seed);
        struct ggml_tensor *out = ggml_flash_attn_ext(ctx, q, k, v, NULL, scale, 0.0f, 0.0f);
        graphs[s] = ggml_new_graph(ctx);
        ggml_build_forward_expand(graphs[s], out);
        plans[s] = ggml_graph_plan(graphs[s], threads, pool);
        plans[s].work_data = plans[s].work_size ? malloc(plans[s].work_size) : NULL;
    }
    double t[REPS];
    for (int r = -2; r < REPS; r++) {
        int s = (r + 2) % sets;
        double t0 = now_s();
        if (ggml_graph_compute(graphs[s], &plans[s]) != GGML_STATUS_SUCCESS) {
            fprintf(stderr, "ggml_graph_compute failed\n");
            exit(1);
        }
        if (r >= 0) t[r] = now_s() - t0;
    }
    qsort(t, REPS, sizeof t[0], cmp_double);
    printf("%d %d %d %.4f %.4f %.4f %d\n", batch, context, kv_heads, t[REPS / 2] * 1e3,
           t[0] * 1e3, t[REPS - 1] * 1e3, sets);
    fflush(stdout);
    for (int s = 0; s < sets; s++) free(plans[s].work_data);
    ggml_free(ctx);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s THREADS f32|f16|bf16 LLC_MIB\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    enum ggml_type type;
    if (strcmp(argv[2], "f32") == 0) {
        type = GGML_TYPE_F32;
    } else if (strcmp(argv[2], "f16") == 0) {
        type = GGML_TYPE_F16;
    } else if (strcmp(argv[2], "bf16") == 0) {
        type = GGML_TYPE_BF16;
    } else {
        fprintf(stderr, "dtype must be f32, f16 or bf16\n");
        return 2;
    }
    double llc = atof(argv[3]) * (1 << 20);
    if (threads < 1 || llc <= 0) {
        fprintf(stderr, "THREADS and LLC_MIB must be positive\n");
        return 2;
    }
    struct ggml_threadpool_params tp = ggml_threadpool_params_default(threads);
    struct ggml_threadpool *pool = ggml_threadpool_new(&tp);
    const int contexts[] = {16, 32, 64, 128, 256, 512, 1024, 4096};
    const int batches[] = {1, 4, 8, 16};
    for (size_t c = 0; c < sizeof contexts / sizeof contexts[0]; c++)
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++)
            point(pool, threads, type, llc, batches[b], contexts[c], HEADS);
    const int gqa_contexts[] = {1024, 4096};
    const int gqa_batches[] = {1, 16};
    for (int c = 0; c < 2; c++)
        for (int b = 0; b < 2; b++) point(pool, threads, type, llc, gqa_batches[b], gqa_contexts[c], 8);
    ggml_threadpool_free(pool);
    return 0;
}
