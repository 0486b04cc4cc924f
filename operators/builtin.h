/* The table of built-in operators (builtin.c). The registry is initialised with it. */
#ifndef KW_OPERATORS_BUILTIN_H
#define KW_OPERATORS_BUILTIN_H

#include "kvweave/op.h"

/* NULL-terminated. */
extern const kw_op *const kw_builtin_ops[];

#endif
