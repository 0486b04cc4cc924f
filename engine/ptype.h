/* Typing raw YAML values against an operator's parameter schema (ptype.c). Internal. */
#ifndef KW_PTYPE_H
#define KW_PTYPE_H

#include <stdint.h>

#include "graph.h"
#include "pdesc.h"

/* Types n against sp into pv (cleared first). On failure returns KW_ETYPE, KW_ERANGE or
 * KW_EINVAL and writes why into w ("wants an int, got 'abc'"); pv then owns nothing. */
int kw__param_value(const kw_ynode *n, const kw_param_spec *sp, kw_pval *pv, char *w,
                    size_t nw);
void kw__pval_clear(kw_pval *pv);
/* YAML 1.2 core ints (decimal, 0x, 0o) and floats (also .inf, .nan). */
int kw__parse_int(const char *s, int64_t *out);
int kw__parse_float(const char *s, double *out);

#endif
