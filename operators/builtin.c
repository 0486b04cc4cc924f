/* Every built-in operator, in one table. Add a line per new operator. */
#include "builtin.h"

/* template */
extern const kw_op kw_op_template_upper;

/* dataset, score */

/* tokenize */

/* decode */
extern const kw_op kw_op_decode_greedy;
extern const kw_op kw_op_decode_sample;
extern const kw_op kw_op_decode_teacher_forced;

const kw_op *const kw_builtin_ops[] = {
    /* template */
    &kw_op_template_upper,
    /* dataset, score */

    /* tokenize */

    /* decode */
    &kw_op_decode_greedy,
    &kw_op_decode_sample,
    &kw_op_decode_teacher_forced,
    NULL,
};
