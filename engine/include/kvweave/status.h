/* kvweave — status codes and error details.
 *
 * Every function returns an int: 0 on success, > 0 a non-error status (KW_END,
 * KW_PENDING), < 0 an error code below. Details go into a kw_error the caller owns:
 *
 *   kw_error err = {0};
 *   if (kw_graph_build(desc, &g, &err) < 0) {
 *       fprintf(stderr, "kvweave: %s\n", err.msg);   // "p.yaml:4:9: unknown operator ..."
 *       return kw_exit_code(err.code);               // 2 for bad input
 *   }
 *
 * Library code never prints and never exits; only the CLI does.
 */
#ifndef KVWEAVE_STATUS_H
#define KVWEAVE_STATUS_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    KW_OK = 0,
    KW_END = 1,        /* a source has no more items */
    KW_PENDING = 2,    /* a task completes later (kw_task_complete) */

    /* bad input: the user can fix it; the CLI exits 2 */
    KW_EINVAL = -1,    /* invalid argument or value */
    KW_EPARSE = -2,    /* a file could not be parsed (YAML, JSON, GGUF, ...) */
    KW_ETYPE = -3,     /* type mismatch (param kind, port type, cardinality) */
    KW_ERANGE = -4,    /* value out of range */
    KW_ENOTFOUND = -5, /* unknown name, missing file or key */
    KW_ECYCLE = -6,    /* the pipeline graph has a cycle */
    KW_EABI = -7,      /* plug-in built against another ABI */
    KW_EFORMAT = -8,   /* a file has the wrong format or is corrupt */
    KW_ELIMIT = -9,    /* a size, depth or count limit was exceeded */
    KW_EDB = -10,      /* the database is not usable (not SQLite, newer schema) */

    /* failures of the environment or of kvweave: the CLI exits 3 */
    KW_ENOMEM = -32,
    KW_EIO = -33,
    KW_ECUDA = -34,
    KW_EINTERNAL = -35,
    KW_ENOSYS = -36,   /* not available in this build (e.g. CUDA without nvcc) */
    KW_ESAMPLE = -37,  /* a sample failed; recorded, the run continues */
    KW_ECANCELED = -38,
};

/* Error details. `file`, `line`, `col` name the place in the user's input when there is
 * one (line and col are 1-based; 0 when unknown). */
typedef struct kw_error {
    int code;
    int line, col;
    char file[512];
    char msg[2048];
} kw_error;

/* Sets err (nullable) and returns code. The message is printf-formatted; when file is
 * non-NULL the message is prefixed with "file:line:col: ". */
int kw_error_set(kw_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int kw_error_at(kw_error *err, int code, const char *file, int line, int col,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
int kw_error_vset(kw_error *err, int code, const char *file, int line, int col,
                  const char *fmt, va_list ap);
/* Prepends "prefix: " to an existing message (for context while unwinding), unless the
 * message starts with prefix already (an inner layer named the same thing). */
int kw_error_prefix(kw_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

const char *kw_strerror(int code);
/* Process exit code for an error code: 0 ok, 2 bad input, 3 internal. */
int kw_exit_code(int code);
static inline int kw_is_input_error(int code) { return code < 0 && code > -32; }

#ifdef __cplusplus
}
#endif
#endif
