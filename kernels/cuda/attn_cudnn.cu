// Causal prefill attention through cuDNN's fused flash attention (KW_CUDA_PREFILL_CUDNN),
// for views of ordered rows (kw_cuda_prefill.host_kv_len: positions increase along each
// row and the queries are its last tokens). cuDNN is loaded at run time (dlopen of
// libcudnn.so.9), so a build or a machine without it still runs kvweave's own kernels;
// kw_cuda_cudnn_version() says whether it was found.
//
// Per sequence: the queries (f32) become a bf16 (n_q, n_head, d) buffer, the K and V of
// the sequence's rows are gathered from their pages into bf16 (kv_len, n_kv, d) buffers,
// cuDNN computes softmax(scale Q K^T + causal mask) V with the diagonal aligned to the
// bottom right (query i of n sits at position kv_len - n + i), and its bf16 output is
// widened into out. The graph is the one cuDNN's fused engines recognize (the pattern
// cuDNN's own frontend builds for SDPA inference before 9.21): matmul, scale, [padding
// mask: gen_index / cmp_lt / logical_and / binary_select], gen_index / add / sub /
// cmp_ge / binary_select for the causal mask, max / sub / exp / sum / log / add / div
// for the softmax, matmul. Plans are built once per size (bucket below) and kept.
#include <dlfcn.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_bf16.h>

#include <mutex>
#include <vector>

#include "attn_prefill.cuh"
#include "common.cuh"

#if __has_include(<cudnn_graph.h>)
#include <cudnn_graph.h>
#define KW_HAVE_CUDNN_H 1
#else
#define KW_HAVE_CUDNN_H 0
#endif

// ---- the copies around the fused call (plain kernels, tested through the whole path) --

__global__ void bf16_to_f32(const __nv_bfloat162 *__restrict__ x, float2 *__restrict__ y,
                            int64_t n2)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n2;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __bfloat1622float2(x[i]);
}

// K and V of tokens 0 .. n_tok - 1 of rows row0 .. row0 + n_kv - 1 (table mode) into
// k, v (n_tok, n_kv, d): one thread per 16 bytes (8 values).
__global__ void gather_kv(const uint4 *__restrict__ base, const int32_t *__restrict__ pages,
                          const int32_t *__restrict__ row_ptr, int row0, int n_kv, int n_tok,
                          int page_tokens, int head_dim, uint4 *__restrict__ k,
                          uint4 *__restrict__ v)
{
    const int vec = head_dim / 8; // 16-byte chunks per row
    const int64_t total = (int64_t)n_tok * n_kv * vec;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % vec);
        const int64_t tk = i / vec; // token * n_kv + kvh
        const int kvh = (int)(tk % n_kv);
        const int t = (int)(tk / n_kv);
        const int page = pages[row_ptr[row0 + kvh] + t / page_tokens];
        const int64_t src =
            ((int64_t)page * 2 * page_tokens + t % page_tokens) * vec + c; // K row
        k[i] = base[src];
        v[i] = base[src + (int64_t)page_tokens * vec];
    }
}

#if KW_HAVE_CUDNN_H

// ---- cuDNN, loaded at run time ---------------------------------------------------------

namespace {

struct Api {
    size_t (*version)(void);
    cudnnStatus_t (*create)(cudnnHandle_t *);
    cudnnStatus_t (*set_stream)(cudnnHandle_t, cudaStream_t);
    const char *(*error_string)(cudnnStatus_t);
    void (*last_error)(char *, size_t);
    cudnnStatus_t (*create_desc)(cudnnBackendDescriptorType_t, cudnnBackendDescriptor_t *);
    cudnnStatus_t (*destroy_desc)(cudnnBackendDescriptor_t);
    cudnnStatus_t (*finalize)(cudnnBackendDescriptor_t);
    cudnnStatus_t (*set)(cudnnBackendDescriptor_t, cudnnBackendAttributeName_t,
                         cudnnBackendAttributeType_t, int64_t, const void *);
    cudnnStatus_t (*get)(cudnnBackendDescriptor_t, cudnnBackendAttributeName_t,
                         cudnnBackendAttributeType_t, int64_t, int64_t *, void *);
    cudnnStatus_t (*execute)(cudnnHandle_t, cudnnBackendDescriptor_t,
                             cudnnBackendDescriptor_t);
};

// Unique ids of the graph's outside tensors (by-value scalars included: their host
// values travel in the variant pack).
enum {
    UID_Q = 1, UID_K, UID_V, UID_O, UID_SCALE, UID_SKV, UID_SQ, UID_NEG, UID_SEQ_Q,
    UID_SEQ_KV, UID_NEG_PAD
};

// A plan is for its exact sizes, or (G_PAD) for any sizes up to them, the actual ones
// read from two device ints (cuDNN's padding mask), so that one plan serves a range of
// lengths.
enum { G_PAD = 1 };

struct Plan {
    int n_head, n_kv, head_dim, n_q, n_kvtok, kind;
    cudnnBackendDescriptor_t plan;
    std::vector<cudnnBackendDescriptor_t> descs; // everything the plan was built from
    int64_t workspace;
    unsigned long long used;                      // last use, for eviction
    bool failed;                                  // no engine: not tried again
};

enum { MAX_PLANS = 32 };

struct Ctx {
    std::mutex mu;
    int state = 0; // 0 not tried, 1 loaded, -1 unavailable
    char why[256] = "";
    Api api = {};
    cudnnHandle_t handle = nullptr;
    Plan plans[MAX_PLANS] = {};
    int n_plans = 0;
    unsigned long long clock = 0;
    // device buffers, grown on demand
    void *q = nullptr, *ws = nullptr; // Q, O, K, V; cuDNN's workspace
    size_t q_bytes = 0, ws_bytes = 0;
    cudaEvent_t done = nullptr; // recorded after the work that last used the buffers
    double build_s = 0;         // seconds spent building plans
    int n_built = 0;
};

Ctx &ctx()
{
    static Ctx c;
    return c;
}

// Loads the library and creates a handle (c.mu held). Sets c.state.
void load(Ctx &c)
{
    if (c.state)
        return;
    c.state = -1;
    const char *off = getenv("KVWEAVE_CUDNN");
    if (off && !strcmp(off, "0")) {
        snprintf(c.why, sizeof c.why, "cuDNN turned off (KVWEAVE_CUDNN=0)");
        return;
    }
    void *h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        h = dlopen("libcudnn.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(c.why, sizeof c.why, "libcudnn.so.9 not found (%s)", dlerror());
        return;
    }
    Api &a = c.api;
    struct {
        void **fn;
        const char *name;
    } syms[] = {
        {(void **)&a.version, "cudnnGetVersion"},
        {(void **)&a.create, "cudnnCreate"},
        {(void **)&a.set_stream, "cudnnSetStream"},
        {(void **)&a.error_string, "cudnnGetErrorString"},
        {(void **)&a.last_error, "cudnnGetLastErrorString"},
        {(void **)&a.create_desc, "cudnnBackendCreateDescriptor"},
        {(void **)&a.destroy_desc, "cudnnBackendDestroyDescriptor"},
        {(void **)&a.finalize, "cudnnBackendFinalize"},
        {(void **)&a.set, "cudnnBackendSetAttribute"},
        {(void **)&a.get, "cudnnBackendGetAttribute"},
        {(void **)&a.execute, "cudnnBackendExecute"},
    };
    for (auto &s : syms)
        if (!(*s.fn = dlsym(h, s.name))) {
            snprintf(c.why, sizeof c.why, "libcudnn lacks %s", s.name);
            return;
        }
    if (a.version() < 90000) {
        snprintf(c.why, sizeof c.why, "cuDNN %zu is older than 9.0", a.version());
        return;
    }
    cudnnStatus_t st = a.create(&c.handle);
    if (st != CUDNN_STATUS_SUCCESS) {
        snprintf(c.why, sizeof c.why, "cudnnCreate: %s", a.error_string(st));
        return;
    }
    c.state = 1;
}

// Builds descriptors, remembering each for destruction; the first failure sticks.
struct Builder {
    Api &a;
    std::vector<cudnnBackendDescriptor_t> &descs;
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    char where[96] = "";
    int64_t next_uid = 100; // virtual tensors

    cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t t)
    {
        cudnnBackendDescriptor_t d = nullptr;
        if (st == CUDNN_STATUS_SUCCESS) {
            st = a.create_desc(t, &d);
            if (st != CUDNN_STATUS_SUCCESS)
                snprintf(where, sizeof where, "create descriptor %d", (int)t);
            else
                descs.push_back(d);
        }
        return d;
    }
    void set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t n,
             cudnnBackendAttributeType_t t, int64_t count, const void *v)
    {
        if (st == CUDNN_STATUS_SUCCESS && (st = a.set(d, n, t, count, v)))
            snprintf(where, sizeof where, "set attribute %d", (int)n);
    }
    void fin(cudnnBackendDescriptor_t d, const char *what)
    {
        if (st == CUDNN_STATUS_SUCCESS && (st = a.finalize(d)))
            snprintf(where, sizeof where, "finalize %s", what);
    }
    void set_desc(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t n,
                  cudnnBackendDescriptor_t v)
    {
        set(d, n, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v);
    }

    // A 4-d tensor; uid 0 for a new virtual one.
    cudnnBackendDescriptor_t tensor(cudnnDataType_t dt, const int64_t dim[4],
                                    const int64_t stride[4], int64_t uid, bool by_value)
    {
        cudnnBackendDescriptor_t t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
        bool virt = uid == 0;
        int64_t id = virt ? next_uid++ : uid, align = 16;
        set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
        set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim);
        set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, stride);
        set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &id);
        set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
        set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt);
        if (by_value)
            set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
        fin(t, "tensor");
        return t;
    }
    cudnnBackendDescriptor_t scalar(cudnnDataType_t dt, int64_t uid)
    {
        static const int64_t one[4] = {1, 1, 1, 1};
        return tensor(dt, one, one, uid, true);
    }
    // y = mode(x[, b[, t]]); axis >= 0 for GEN_INDEX
    cudnnBackendDescriptor_t pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t prec,
                                       cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                                       cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y,
                                       int64_t axis = -1)
    {
        cudnnBackendDescriptor_t pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
        set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
        set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec);
        if (axis >= 0)
            set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
        fin(pw, "pointwise");
        cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
        set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw);
        set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
        if (b)
            set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b);
        if (t)
            set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t);
        set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
        fin(op, "pointwise operation");
        return op;
    }
    cudnnBackendDescriptor_t reduction(cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x,
                                       cudnnBackendDescriptor_t y)
    {
        cudnnBackendDescriptor_t r = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
        cudnnDataType_t f = CUDNN_DATA_FLOAT;
        set(r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
        set(r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f);
        fin(r, "reduction");
        cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
        set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x);
        set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y);
        set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, r);
        fin(op, "reduction operation");
        return op;
    }
    // m, n, k: nullable device ints that bound the product's sizes (padded graphs)
    cudnnBackendDescriptor_t matmul(cudnnBackendDescriptor_t a_, cudnnBackendDescriptor_t b,
                                    cudnnBackendDescriptor_t c, cudnnBackendDescriptor_t m_over,
                                    cudnnBackendDescriptor_t n_over,
                                    cudnnBackendDescriptor_t k_over)
    {
        cudnnBackendDescriptor_t m = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
        cudnnDataType_t f = CUDNN_DATA_FLOAT;
        set(m, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f);
        fin(m, "matmul");
        cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
        set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a_);
        set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b);
        set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c);
        set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, m);
        if (m_over)
            set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, m_over);
        if (n_over)
            set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, n_over);
        if (k_over)
            set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, k_over);
        fin(op, "matmul operation");
        return op;
    }
};

void destroy(Api &a, Plan &p)
{
    if (p.plan)
        a.destroy_desc(p.plan);
    for (auto it = p.descs.rbegin(); it != p.descs.rend(); ++it)
        a.destroy_desc(*it);
    p.descs.clear();
    p.plan = nullptr;
}

// Builds the plan for one shape (c.mu held); KW_OK or KW_ENOSYS with c.why set.
int build(Ctx &c, Plan &p)
{
    Api &a = c.api;
    Builder g{a, p.descs};
    const int64_t h = p.n_head, hk = p.n_kv, d = p.head_dim, sq = p.n_q, skv = p.n_kvtok;
    const bool pad = p.kind & G_PAD;
    const cudnnDataType_t bf = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT,
                          i32 = CUDNN_DATA_INT32, b8 = CUDNN_DATA_BOOLEAN;
    // Q, O: (sq, h, d) in memory; K, V: (skv, hk, d); K enters as K^T (b, hk, d, skv)
    const int64_t q_dim[4] = {1, h, sq, d}, q_str[4] = {sq * h * d, d, h * d, 1};
    const int64_t kt_dim[4] = {1, hk, d, skv}, kt_str[4] = {skv * hk * d, d, 1, hk * d};
    const int64_t v_dim[4] = {1, hk, skv, d}, v_str[4] = {skv * hk * d, d, hk * d, 1};
    const int64_t s_dim[4] = {1, h, sq, skv}, s_str[4] = {h * sq * skv, sq * skv, skv, 1};
    const int64_t r_dim[4] = {1, h, sq, 1}, r_str[4] = {h * sq, sq, 1, 1};

    auto Q = g.tensor(bf, q_dim, q_str, UID_Q, false);
    auto KT = g.tensor(bf, kt_dim, kt_str, UID_K, false);
    auto V = g.tensor(bf, v_dim, v_str, UID_V, false);
    auto O = g.tensor(bf, q_dim, q_str, UID_O, false);
    auto scale = g.scalar(f32, UID_SCALE);
    // padded: the actual lengths (device ints), which also bound both matmuls
    static const int64_t one[4] = {1, 1, 1, 1};
    cudnnBackendDescriptor_t seq_q = nullptr, seq_kv = nullptr;
    if (pad) {
        seq_q = g.tensor(i32, one, one, UID_SEQ_Q, false);
        seq_kv = g.tensor(i32, one, one, UID_SEQ_KV, false);
    }

    std::vector<cudnnBackendDescriptor_t> ops;
    auto S = g.tensor(f32, s_dim, s_str, 0, false);
    ops.push_back(g.matmul(Q, KT, S, seq_q, seq_kv, nullptr));
    auto S1 = g.tensor(f32, s_dim, s_str, 0, false);
    ops.push_back(g.pointwise(CUDNN_POINTWISE_MUL, f32, S, scale, nullptr, S1));
    if (pad) { // keep row < seq_q and col < seq_kv
        auto neg = g.scalar(f32, UID_NEG_PAD);
        auto row = g.tensor(i32, s_dim, s_str, 0, false);
        ops.push_back(
            g.pointwise(CUDNN_POINTWISE_GEN_INDEX, i32, S1, nullptr, nullptr, row, 2));
        auto col = g.tensor(i32, s_dim, s_str, 0, false);
        ops.push_back(
            g.pointwise(CUDNN_POINTWISE_GEN_INDEX, i32, S1, nullptr, nullptr, col, 3));
        auto row_in = g.tensor(i32, s_dim, s_str, 0, false);
        ops.push_back(g.pointwise(CUDNN_POINTWISE_CMP_LT, i32, row, seq_q, nullptr, row_in));
        auto col_in = g.tensor(i32, s_dim, s_str, 0, false);
        ops.push_back(g.pointwise(CUDNN_POINTWISE_CMP_LT, i32, col, seq_kv, nullptr, col_in));
        auto both = g.tensor(b8, s_dim, s_str, 0, false);
        ops.push_back(
            g.pointwise(CUDNN_POINTWISE_LOGICAL_AND, b8, row_in, col_in, nullptr, both));
        auto Sp = g.tensor(f32, s_dim, s_str, 0, false);
        ops.push_back(g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, f32, S1, neg, both, Sp));
        S1 = Sp;
    }
    // the causal mask aligned bottom right: keep row + s_kv - s_q >= col
    {
        auto s_kv = pad ? seq_kv : g.scalar(i32, UID_SKV);
        auto s_q = pad ? seq_q : g.scalar(i32, UID_SQ);
        auto neg = g.scalar(f32, UID_NEG);
        auto row = g.tensor(i32, s_dim, s_str, 0, false);
        ops.push_back(
            g.pointwise(CUDNN_POINTWISE_GEN_INDEX, i32, S1, nullptr, nullptr, row, 2));
        auto row2 = g.tensor(i32, s_dim, s_str, 0, false);
        ops.push_back(g.pointwise(CUDNN_POINTWISE_ADD, i32, row, s_kv, nullptr, row2));
        auto row3 = g.tensor(i32, s_dim, s_str, 0, false);
        ops.push_back(g.pointwise(CUDNN_POINTWISE_SUB, i32, row2, s_q, nullptr, row3));
        auto col = g.tensor(i32, s_dim, s_str, 0, false);
        ops.push_back(
            g.pointwise(CUDNN_POINTWISE_GEN_INDEX, i32, S1, nullptr, nullptr, col, 3));
        auto keep = g.tensor(b8, s_dim, s_str, 0, false);
        ops.push_back(g.pointwise(CUDNN_POINTWISE_CMP_GE, b8, row3, col, nullptr, keep));
        auto S2 = g.tensor(f32, s_dim, s_str, 0, false);
        ops.push_back(g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, f32, S1, neg, keep, S2));
        S1 = S2;
    }
    // softmax with its statistics (virtual), as the fused engines expect
    auto M = g.tensor(f32, r_dim, r_str, 0, false);
    ops.push_back(g.reduction(CUDNN_REDUCE_TENSOR_MAX, S1, M));
    auto S3 = g.tensor(f32, s_dim, s_str, 0, false);
    ops.push_back(g.pointwise(CUDNN_POINTWISE_SUB, f32, S1, M, nullptr, S3));
    auto E = g.tensor(f32, s_dim, s_str, 0, false);
    ops.push_back(g.pointwise(CUDNN_POINTWISE_EXP, f32, S3, nullptr, nullptr, E));
    auto Z = g.tensor(f32, r_dim, r_str, 0, false);
    ops.push_back(g.reduction(CUDNN_REDUCE_TENSOR_ADD, E, Z));
    auto LZ = g.tensor(f32, r_dim, r_str, 0, false);
    ops.push_back(g.pointwise(CUDNN_POINTWISE_LOG, f32, Z, nullptr, nullptr, LZ));
    auto stats = g.tensor(f32, r_dim, r_str, 0, false);
    ops.push_back(g.pointwise(CUDNN_POINTWISE_ADD, f32, M, LZ, nullptr, stats));
    auto P = g.tensor(bf, s_dim, s_str, 0, false);
    ops.push_back(g.pointwise(CUDNN_POINTWISE_DIV, f32, E, Z, nullptr, P));
    ops.push_back(g.matmul(P, V, O, seq_q, nullptr, seq_kv));

    auto graph = g.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    g.set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &c.handle);
    g.set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
          (int64_t)ops.size(), ops.data());
    g.fin(graph, "operation graph");
    if (g.st) {
        char msg[128] = "";
        a.last_error(msg, sizeof msg);
        snprintf(c.why, sizeof c.why, "cuDNN %s: %s %s", g.where, a.error_string(g.st), msg);
        return KW_ENOSYS;
    }
    // engine configurations, best first: heuristics mode A, then the fallback list
    const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    for (cudnnBackendHeurMode_t mode : modes) {
        cudnnBackendDescriptor_t heur = nullptr;
        if (a.create_desc(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur))
            continue;
        int64_t n = 0;
        bool ok = !a.set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
                         CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph) &&
                  !a.set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) &&
                  !a.finalize(heur) &&
                  !a.get(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                         0, &n, nullptr);
        std::vector<cudnnBackendDescriptor_t> cfgs;
        for (int64_t i = 0; ok && i < n; i++) {
            cudnnBackendDescriptor_t e = nullptr;
            if (a.create_desc(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &e))
                break;
            cfgs.push_back(e);
        }
        int64_t got = 0;
        if (ok && !cfgs.empty() &&
            a.get(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                  (int64_t)cfgs.size(), &got, cfgs.data()))
            got = 0;
        for (int64_t i = 0; i < got && !p.plan; i++) {
            cudnnBackendDescriptor_t plan = nullptr;
            if (a.create_desc(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan))
                break;
            if (!a.set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1,
                       &c.handle) &&
                !a.set(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                       CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]) &&
                !a.finalize(plan)) {
                int64_t ws = 0, cnt = 0;
                a.get(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &cnt,
                      &ws);
                p.plan = plan, p.workspace = ws;
            } else {
                a.destroy_desc(plan);
            }
        }
        for (auto e : cfgs)
            a.destroy_desc(e);
        a.destroy_desc(heur);
        if (p.plan)
            return KW_OK;
    }
    char msg[128] = "";
    a.last_error(msg, sizeof msg);
    snprintf(c.why, sizeof c.why,
             "no cuDNN engine runs causal attention of %lld queries over %lld keys, %lld/%lld "
             "heads, head_dim %lld (%s)",
             (long long)sq, (long long)skv, (long long)h, (long long)hk, (long long)d, msg);
    return KW_ENOSYS;
}

// The plan for this shape, built if new (c.mu held).
int plan_for(Ctx &c, int n_head, int n_kv, int head_dim, int n_q, int n_kvtok, int kind,
             Plan **out)
{
    for (int i = 0; i < c.n_plans; i++) {
        Plan &p = c.plans[i];
        if (p.n_head == n_head && p.n_kv == n_kv && p.head_dim == head_dim && p.n_q == n_q &&
            p.n_kvtok == n_kvtok && p.kind == kind) {
            p.used = ++c.clock;
            *out = &p;
            return p.failed ? KW_ENOSYS : KW_OK;
        }
    }
    int slot = c.n_plans;
    if (slot == MAX_PLANS) { // replace the least recently used
        slot = 0;
        for (int i = 1; i < MAX_PLANS; i++)
            if (c.plans[i].used < c.plans[slot].used)
                slot = i;
        destroy(c.api, c.plans[slot]);
    } else {
        c.n_plans++;
    }
    Plan &p = c.plans[slot];
    p = Plan{};
    p.n_head = n_head, p.n_kv = n_kv, p.head_dim = head_dim, p.n_q = n_q, p.n_kvtok = n_kvtok;
    p.kind = kind;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = build(c, p);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    c.build_s += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    p.used = ++c.clock;
    if (rc) { // remembered, so that the shape does not pay for a failed build again
        destroy(c.api, p);
        p.failed = true;
        return rc;
    }
    c.n_built++;
    *out = &p;
    return KW_OK;
}

// Grows a device buffer to at least `need` bytes; waits for the stream first so that no
// queued work still reads the old one.
int grow(void **buf, size_t *have, size_t need, cudaStream_t st)
{
    if (need <= *have)
        return KW_OK;
    KW_CUDA_TRY(cudaStreamSynchronize(st));
    if (*buf)
        KW_CUDA_TRY(cudaFree(*buf));
    *buf = nullptr, *have = 0;
    KW_CUDA_TRY(cudaMalloc(buf, need));
    // finite from the start: a padded plan's tensors span rows no call wrote
    KW_CUDA_TRY(cudaMemsetAsync(*buf, 0, need, st));
    *have = need;
    return KW_OK;
}

} // namespace

extern "C" int kw_cuda_cudnn_version(char *why, size_t why_size)
{
    Ctx &c = ctx();
    std::lock_guard<std::mutex> lock(c.mu);
    load(c);
    if (why && why_size)
        snprintf(why, why_size, "%s", c.why);
    return c.state == 1 ? (int)c.api.version() : 0;
}

extern "C" void kw_cuda_cudnn_stats(int *plans_built, double *build_seconds)
{
    Ctx &c = ctx();
    std::lock_guard<std::mutex> lock(c.mu);
    if (plans_built)
        *plans_built = c.n_built;
    if (build_seconds)
        *build_seconds = c.build_s;
}

namespace {

// Runs plan p over the buffers (c.mu held); lens (device: the actual query and key
// counts) may be null for a plan without G_PAD.
int exec(Ctx &c, const Plan &p, cudaStream_t st, void *q, void *k, void *v, void *o,
         float scale, int32_t *lens)
{
    Api &api = c.api;
    float neg = -FLT_MAX;
    int32_t skv = p.n_kvtok, sq = p.n_q;
    int64_t uids[11];
    void *ptrs[11];
    int n = 0;
    uids[n] = UID_Q, ptrs[n++] = q;
    uids[n] = UID_K, ptrs[n++] = k;
    uids[n] = UID_V, ptrs[n++] = v;
    uids[n] = UID_O, ptrs[n++] = o;
    uids[n] = UID_SCALE, ptrs[n++] = &scale;
    if (p.kind & G_PAD) {
        uids[n] = UID_SEQ_Q, ptrs[n++] = lens;
        uids[n] = UID_SEQ_KV, ptrs[n++] = lens + 1;
        uids[n] = UID_NEG_PAD, ptrs[n++] = &neg;
    }
    if (!(p.kind & G_PAD)) {
        uids[n] = UID_SKV, ptrs[n++] = &skv;
        uids[n] = UID_SQ, ptrs[n++] = &sq;
    }
    uids[n] = UID_NEG, ptrs[n++] = &neg;
    void *ws = c.ws;
    cudnnBackendDescriptor_t pack = nullptr;
    cudnnStatus_t e = api.set_stream(c.handle, st);
    if (!e)
        e = api.create_desc(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
    if (!e)
        e = api.set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
    if (!e)
        e = api.set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (!e)
        e = api.set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (!e)
        e = api.finalize(pack);
    if (!e)
        e = api.execute(c.handle, p.plan, pack);
    if (pack)
        api.destroy_desc(pack);
    if (e) {
        char msg[128] = "";
        api.last_error(msg, sizeof msg);
        snprintf(c.why, sizeof c.why, "cuDNN execute: %s %s", api.error_string(e), msg);
        return kw__cuda_fail(cudaErrorUnknown, c.why, __FILE__, __LINE__);
    }
    return KW_OK;
}

// The size a plan is built for: a multiple of 256 up to 4096, of 1024 above, so that
// the plans of a run's many lengths stay few (a shorter length is padded to it; a padded
// plan computes over its whole size, so its cost is at most (1 + 1024 / n)^2 times
// that of n, 1.13 at 16k).
int bucket(int n)
{
    const int r = n <= 4096 ? 256 : 1024;
    return (n + r - 1) / r * r;
}

// The plan for n_q queries over n_kv keys: built for exactly those sizes where they are
// bucket sizes, else a padded one for their buckets.
int plan_sized(Ctx &c, int h, int hk, int d, int n_q, int n_kv, Plan **out)
{
    const int bq = bucket(n_q), bk = bucket(n_kv);
    if (bq == n_q && bk == n_kv)
        return plan_for(c, h, hk, d, n_q, n_kv, 0, out);
    return plan_for(c, h, hk, d, bq, bk, G_PAD, out);
}

} // namespace

__global__ void set_lens(int32_t *lens, int n_q, int n_kv) { lens[0] = n_q, lens[1] = n_kv; }

namespace {

// The sequences of one call (c.mu held).
int run_seqs(Ctx &c, cudaStream_t st, const kw_cuda_prefill *a)
{
    const int h = a->n_head, hk = a->n_kv, d = a->head_dim;
    int64_t max_q = 0, max_kv = 0;
    for (int s = 0; s < a->n_seq; s++) {
        int64_t nq = a->host_tok_off[s + 1] - a->host_tok_off[s], nk = a->host_kv_len[s];
        if (nq < 0 || nk < nq)
            return KW_EINVAL;
        max_q = nq > max_q ? nq : max_q, max_kv = nk > max_kv ? nk : max_kv;
    }
    // one buffer: Q and O (bq, h, d) and K and V (bk, hk, d) in bf16 (a padded plan's
    // tensors span their buckets), and the lengths
    const int64_t bq = bucket((int)max_q), bk = bucket((int)max_kv);
    const size_t q_sz = (size_t)bq * h * d * 2, kv_sz = (size_t)bk * hk * d * 2;
    int rc = grow(&c.q, &c.q_bytes, 2 * q_sz + 2 * kv_sz + 16, st);
    if (rc)
        return rc;
    char *qb = (char *)c.q, *ob = qb + q_sz, *kb = ob + q_sz, *vb = kb + kv_sz;
    int32_t *lens = (int32_t *)(vb + kv_sz);
    for (int s = 0; s < a->n_seq; s++) {
        const int t0 = a->host_tok_off[s], nq = a->host_tok_off[s + 1] - t0;
        const int nk = a->host_kv_len[s];
        if (nq == 0)
            continue;
        Plan *p = nullptr;
        if ((rc = plan_sized(c, h, hk, d, nq, nk, &p)) ||
            (rc = grow(&c.ws, &c.ws_bytes, (size_t)p->workspace, st)))
            return rc;
        const int64_t nqv = (int64_t)nq * h * d;
        if ((rc = kw_cuda_to_bf16(st, a->q + (int64_t)t0 * h * d, qb, nqv)))
            return rc;
        gather_kv<<<kw_blocks_for((int64_t)nk * hk * d / 8), 256, 0, st>>>(
            (const uint4 *)a->base[0], a->pages, a->row_ptr, s * hk, hk, nk, a->page_tokens, d,
            (uint4 *)kb, (uint4 *)vb);
        KW_CUDA_LAUNCHED();
        if (p->kind & G_PAD) {
            set_lens<<<1, 1, 0, st>>>(lens, nq, nk);
            KW_CUDA_LAUNCHED();
        }
        if ((rc = exec(c, *p, st, qb, kb, vb, ob, a->scale, lens)))
            return rc;
        bf16_to_f32<<<kw_blocks_for(nqv / 2), 256, 0, st>>>(
            (const __nv_bfloat162 *)ob, (float2 *)(a->out + (int64_t)t0 * h * d), nqv / 2);
        KW_CUDA_LAUNCHED();
    }
    return KW_OK;
}

} // namespace

extern "C" int kw__cuda_prefill_cudnn(void *stream, const kw_cuda_prefill *a)
{
    Ctx &c = ctx();
    std::lock_guard<std::mutex> lock(c.mu);
    load(c);
    if (c.state != 1)
        return KW_ENOSYS;
    cudaStream_t st = (cudaStream_t)stream;
    // the buffers are shared by every caller: this stream waits for the work that used
    // them last, whichever stream queued it (an event never recorded is complete)
    if (!c.done)
        KW_CUDA_TRY(cudaEventCreateWithFlags(&c.done, cudaEventDisableTiming));
    KW_CUDA_TRY(cudaStreamWaitEvent(st, c.done, 0));
    int rc = run_seqs(c, st, a);
    KW_CUDA_TRY(cudaEventRecord(c.done, st));
    return rc;
}

#else // no cudnn_graph.h at build time

extern "C" int kw_cuda_cudnn_version(char *why, size_t why_size)
{
    if (why && why_size)
        snprintf(why, why_size, "built without cuDNN's headers");
    return 0;
}

extern "C" void kw_cuda_cudnn_stats(int *plans_built, double *build_seconds)
{
    if (plans_built)
        *plans_built = 0;
    if (build_seconds)
        *build_seconds = 0;
}

extern "C" int kw__cuda_prefill_cudnn(void *, const kw_cuda_prefill *) { return KW_ENOSYS; }

#endif
