/* The KV pool's internals, shared by kvpool.c (tables, reference counts, sequences) and
 * kvpage.c (page payloads). Not part of the API. */
#ifndef KW_RUNTIME_KVPOOL_INTERNAL_H
#define KW_RUNTIME_KVPOOL_INTERNAL_H

#include "kvweave/kvpool.h"

typedef struct kw_ptab {
    int32_t *pages;
    int n_pages, cap;
    int n_tok;
    uint32_t edits; /* changes other than appends (kw_kvseq_pages_edits) */
} kw_ptab;

struct kw_kvpool {
    kw_kvpool_opts o;
    int n_layer, n_kv, n_head, hd, P;
    int64_t page_floats; /* 2 * P * hd */
    int64_t page_bytes;  /* of a main-pool page (payload and int8 scales) */
    int bits;            /* per-channel-K pages: 8 or 4 (0: other types) */
    int64_t code_bytes;  /* per-channel-K pages: of K's (or V's) codes */
    float **stage;       /* per-channel-K pages: per page, its f32 K rows while open */
    int64_t n_open;      /* pages with a stage */
    uint8_t *arena;
    int32_t *pos;
    int32_t *refc;
    int32_t *freel;
    int64_t n_free;
    float *tmp;
    int32_t *tmp_pos;
    int64_t tmp_used, tmp_peak;
    int64_t table_bytes;
    kw_kvpool_device dev; /* device_pages pools */
};

struct kw_kvseq {
    kw_kvpool *p;
    kw_ptab *t; /* (n_layer * n_kv) */
    uint64_t uid;
};

static inline uint8_t *page_ptr(kw_kvpool *p, int32_t g) { return p->arena + g * p->page_bytes; }
static inline int32_t *page_pos(kw_kvpool *p, int32_t g) { return p->pos + (int64_t)g * p->P; }

/* Writes one K or V row into slot `slot` of page g, quantizing for the page type (a
 * per-channel-K page's K row goes to its stage; the caller closes the page once full).
 * 0 or KW_ENOMEM. */
int kw__page_row_put(kw_kvpool *p, int32_t g, int slot, int which, const float *x);
/* A per-channel-K page's K quantized per channel from its stage, which goes. */
void kw__page_close(kw_kvpool *p, int32_t g);
/* Slot ss of page gs to slot sd of page gd: f32 and int8 pages (payload and scales), and
 * per-channel-K pages (through gd's stage; a full gd reopens). */
void kw__page_slot_copy(kw_kvpool *p, uint8_t *gd, int sd, const uint8_t *gs, int ss);
int kw__page_slot_copy_kchan(kw_kvpool *p, int32_t gd, int sd, int32_t gs, int ss);

#endif
