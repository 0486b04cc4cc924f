/* The view container (kvpool.h): CSR rows of spans, and the want lists of a selection
 * by position. Views over a sequence's tables (kw_view_dense, kw_view_add_token,
 * kw_view_is_dense) are in kvpool.c, beside the tables. */
#include <stdlib.h>

#include "kvweave/kvpool.h"

kw_view *kw_view_new(void) { return calloc(1, sizeof(kw_view)); }

kw_view *kw_view_free(kw_view *w)
{
    if (w) {
        free(w->row_ptr);
        free(w->spans);
        free(w->want_pos);
        free(w->want_row);
        free(w);
    }
    return NULL;
}

/* Room for one more want; want_row grows with want_pos once a view has used it. */
static int want_room(kw_view *w)
{
    if (w->n_want < w->cap_want)
        return 0;
    int cap = w->cap_want ? 2 * w->cap_want : 64;
    int32_t *p = realloc(w->want_pos, (size_t)cap * sizeof *p);
    if (!p)
        return KW_ENOMEM;
    w->want_pos = p;
    if (w->want_row || w->want_by_row) {
        int32_t *r = realloc(w->want_row, (size_t)cap * sizeof *r);
        if (!r)
            return KW_ENOMEM;
        w->want_row = r;
    }
    w->cap_want = cap;
    return 0;
}

int kw_view_want(kw_view *w, int32_t pos)
{
    if (w->want_by_row)
        return KW_EINVAL;
    int rc = want_room(w);
    if (rc == 0)
        w->want_pos[w->n_want++] = pos;
    return rc;
}

int kw_view_want_row(kw_view *w, int row, int32_t pos)
{
    if (row < 0 || row >= w->n_rows || (!w->want_by_row && w->n_want > 0))
        return KW_EINVAL;
    if (w->n_want > 0) {
        int32_t lr = w->want_row[w->n_want - 1], lp = w->want_pos[w->n_want - 1];
        if (row < lr || (row == lr && pos <= lp))
            return KW_EINVAL;
    }
    if (!w->want_row && w->cap_want > 0) { /* the first per-row want of this view */
        if (!(w->want_row = malloc((size_t)w->cap_want * sizeof *w->want_row)))
            return KW_ENOMEM;
    }
    w->want_by_row = true;
    int rc = want_room(w);
    if (rc < 0)
        return rc;
    w->want_pos[w->n_want] = pos;
    w->want_row[w->n_want++] = row;
    return 0;
}

void kw_view_wanted(const kw_view *w, int row, int *a, int *b)
{
    if (!w->want_by_row) {
        *a = 0, *b = w->n_want;
        return;
    }
    int lo = 0, hi = w->n_want; /* the first entry of a row >= row, then > row */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (w->want_row[mid] < row)
            lo = mid + 1;
        else
            hi = mid;
    }
    *a = lo;
    for (hi = w->n_want; lo < hi;) {
        int mid = lo + (hi - lo) / 2;
        if (w->want_row[mid] <= row)
            lo = mid + 1;
        else
            hi = mid;
    }
    *b = lo;
}

int kw_view_reset(kw_view *w, int n_rows, bool per_qhead)
{
    if (n_rows < 0)
        return KW_EINVAL;
    if (n_rows + 1 > w->cap_rows) {
        int *r = realloc(w->row_ptr, (size_t)(n_rows + 1) * sizeof *r);
        if (!r)
            return KW_ENOMEM;
        w->row_ptr = r;
        w->cap_rows = n_rows + 1;
    }
    w->n_rows = n_rows;
    w->cur_row = 0;
    w->per_qhead = per_qhead;
    w->by_pos = 0;
    w->n_want = 0;
    w->want_by_row = false;
    for (int i = 0; i <= n_rows; i++)
        w->row_ptr[i] = 0;
    return 0;
}

/* Rows are filled in order; every row after the current one ends where the spans end,
 * so the CSR is valid after each call. */
int kw_view_begin_row(kw_view *w, int row)
{
    if (row < w->cur_row || row >= w->n_rows)
        return KW_EINVAL;
    w->cur_row = row;
    return 0;
}

int kw_view_add(kw_view *w, int pool, int32_t page, int first, int n)
{
    if (n <= 0 || first < 0 || first + n > 65535 || w->n_rows == 0)
        return KW_EINVAL;
    int ns = w->row_ptr[w->n_rows];
    if (ns + 1 > w->cap_spans) {
        int cap = w->cap_spans ? w->cap_spans * 2 : 64;
        kw_span *s = realloc(w->spans, (size_t)cap * sizeof *s);
        if (!s)
            return KW_ENOMEM;
        w->spans = s;
        w->cap_spans = cap;
    }
    w->spans[ns] = (kw_span){.page = page, .first = (uint16_t)first, .n = (uint16_t)n,
                             .pool = (uint8_t)pool};
    for (int r = w->cur_row + 1; r <= w->n_rows; r++)
        w->row_ptr[r] = ns + 1;
    return 0;
}

int64_t kw_view_tokens(const kw_view *w)
{
    int64_t n = 0;
    for (int i = 0; i < w->row_ptr[w->n_rows]; i++)
        n += w->spans[i].n;
    return n;
}

int kw_view_row_tokens(const kw_view *w, int row)
{
    int n = 0;
    for (int i = w->row_ptr[row]; i < w->row_ptr[row + 1]; i++)
        n += w->spans[i].n;
    return n;
}
