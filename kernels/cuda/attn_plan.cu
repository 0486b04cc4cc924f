// Decode attention's host-side planning: rows cut into work items (kernels_cuda.h,
// kw_cuda_attn_plan*), and the item size for whole waves of the device's blocks.
#include <cstdint>

#include "attn_decode.cuh"

static int clamp_tokens(int max_tokens)
{
    // the kernel flattens an item into KW_ATTN_MAX_ITEM_TOKENS slots; spans are at most
    // a page
    const int cap = KW_ATTN_MAX_ITEM_TOKENS - 256;
    return max_tokens < 1 ? 1 : max_tokens > cap ? cap : max_tokens;
}

extern "C" int kw_cuda_attn_plan_size(int n_rows, const int32_t *row_ptr,
                                      const kw_cuda_span *spans, int max_tokens)
{
    max_tokens = clamp_tokens(max_tokens);
    int n = 0;
    for (int r = 0; r < n_rows; r++) {
        int tok = 0, items = 1;
        for (int s = row_ptr[r]; s < row_ptr[r + 1]; s++) {
            if (tok > 0 && tok + spans[s].n > max_tokens)
                items++, tok = 0;
            tok += spans[s].n;
        }
        n += items;
    }
    return n;
}

extern "C" int kw_cuda_attn_plan(int n_rows, const int32_t *row_ptr, const kw_cuda_span *spans,
                                 int max_tokens, int32_t *items, int32_t *row_part)
{
    max_tokens = clamp_tokens(max_tokens);
    int n = 0, parts = 0;
    for (int r = 0; r < n_rows; r++) {
        int first = n, tok = 0, start = row_ptr[r];
        for (int s = row_ptr[r]; s < row_ptr[r + 1]; s++) {
            if (tok > 0 && tok + spans[s].n > max_tokens) {
                int32_t *it = items + 4 * n++;
                it[0] = r, it[1] = start, it[2] = s, it[3] = 0;
                start = s, tok = 0;
            }
            tok += spans[s].n;
        }
        int32_t *it = items + 4 * n++;
        it[0] = r, it[1] = start, it[2] = row_ptr[r + 1], it[3] = 0;
        int k = n - first;
        row_part[2 * r] = k > 1 ? parts : 0;
        row_part[2 * r + 1] = k > 1 ? k : 0;
        for (int i = first; i < n; i++)
            items[4 * i + 3] = k > 1 ? parts++ : -1;
    }
    return parts;
}

// Table mode items: whole tiles of 32 tokens, at least one item per row (an empty row
// gets one that writes zeros).
static int table_item_tokens(int max_tokens)
{
    return max_tokens < 32 ? 32 : max_tokens / 32 * 32;
}

extern "C" int kw_cuda_attn_plan_table_size(int n_rows, const int32_t *row_tokens,
                                            int page_tokens, int max_tokens)
{
    (void)page_tokens;
    const int mt = table_item_tokens(max_tokens);
    int n = 0;
    for (int r = 0; r < n_rows; r++)
        n += row_tokens[r] > mt ? (row_tokens[r] + mt - 1) / mt : 1;
    return n;
}

extern "C" int kw_cuda_attn_plan_table(int n_rows, const int32_t *row_tokens, int page_tokens,
                                       int max_tokens, int32_t *items, int32_t *row_part)
{
    (void)page_tokens;
    const int mt = table_item_tokens(max_tokens);
    int n = 0, parts = 0;
    for (int r = 0; r < n_rows; r++) {
        const int len = row_tokens[r], k = len > mt ? (len + mt - 1) / mt : 1;
        row_part[2 * r] = k > 1 ? parts : 0;
        row_part[2 * r + 1] = k > 1 ? k : 0;
        for (int i = 0; i < k; i++, n++) {
            int32_t *it = items + 4 * n;
            it[0] = r, it[1] = i * mt, it[2] = (i + 1) * mt < len ? (i + 1) * mt : len;
            it[3] = k > 1 ? parts++ : -1;
        }
    }
    return parts;
}

// The item size whose whole waves of items over `slots` concurrent blocks cost the least,
// an item costing its tokens plus a fixed ITEM_COST (pipeline fill, partial write and
// merge). Candidates cut the longest row into k items, k = 1, 2, ... (with equal rows the
// best is the largest size that still fills whole waves: one wave of long items at batch
// 1, where fixed short items left most of each item's copy pipeline empty), or spread all
// tokens over w whole waves (unequal rows).
extern "C" int kw_cuda_attn_plan_tokens(int n_rows, const int32_t *row_tokens, int slots, int cap)
{
    constexpr int64_t ITEM_COST = 192;
    int64_t maxlen = 0;
    for (int r = 0; r < n_rows; r++)
        maxlen = row_tokens[r] > maxlen ? row_tokens[r] : maxlen;
    if (slots < 1)
        slots = 1;
    int64_t lim = cap > 0 ? cap / 64 * 64 : INT32_MAX / 2;
    if (lim < 64)
        lim = 64;
    int64_t total = 0, best_t = 64, best_cost = INT64_MAX;
    for (int r = 0; r < n_rows; r++)
        total += row_tokens[r];
    auto consider = [&](int64_t t) {
        t = (t + 63) / 64 * 64;
        t = t < 64 ? 64 : t > lim ? lim : t;
        int64_t n = 0;
        for (int r = 0; r < n_rows; r++)
            n += row_tokens[r] > t ? (row_tokens[r] + t - 1) / t : 1;
        const int64_t cost = (n + slots - 1) / slots * (t + ITEM_COST);
        if (cost < best_cost || (cost == best_cost && t > best_t))
            best_cost = cost, best_t = t;
    };
    // the longest row in k items (equal rows: whole waves), and the total in w waves
    const int64_t kmax = (int64_t)8 * slots / (n_rows > 0 ? n_rows : 1) + 2;
    for (int64_t k = 1; k <= kmax && (maxlen + k - 1) / k > 32; k++)
        consider((maxlen + k - 1) / k);
    for (int64_t w = 1; w <= 16 || (w * slots * 64 < total && w < (int64_t)1 << 40);
         w += w < 16 ? 1 : w / 8)
        consider((total + w * slots - 1) / (w * slots));
    return (int)best_t;
}
