/* Every built-in operator, in one table. Add a line per new operator. */
#include "builtin.h"

/* template */
extern const kw_op kw_op_template_upper;

/* dataset, score */

/* tokenize */
extern const kw_op kw_op_tokenize_chat;
extern const kw_op kw_op_tokenize_raw;

/* decode */

const kw_op *const kw_builtin_ops[] = {
    /* template */
    &kw_op_template_upper,
    /* dataset, score */

    /* tokenize */
    &kw_op_tokenize_chat,
    &kw_op_tokenize_raw,

    /* decode */

    NULL,
};
