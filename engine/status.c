/* Status codes and error details (status.h). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "kvweave/status.h"

int kw_error_vset(kw_error *err, int code, const char *file, int line, int col,
                  const char *fmt, va_list ap)
{
    if (!err)
        return code;
    char msg[sizeof err->msg];
    vsnprintf(msg, sizeof msg, fmt, ap);
    err->code = code;
    err->line = line;
    err->col = col;
    if (file) {
        snprintf(err->file, sizeof err->file, "%s", file);
        if (line > 0 && col > 0)
            snprintf(err->msg, sizeof err->msg, "%s:%d:%d: %s", file, line, col, msg);
        else if (line > 0)
            snprintf(err->msg, sizeof err->msg, "%s:%d: %s", file, line, msg);
        else
            snprintf(err->msg, sizeof err->msg, "%s: %s", file, msg);
    } else {
        err->file[0] = '\0';
        snprintf(err->msg, sizeof err->msg, "%s", msg);
    }
    return code;
}

int kw_error_set(kw_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kw_error_vset(err, code, NULL, 0, 0, fmt, ap);
    va_end(ap);
    return code;
}

int kw_error_at(kw_error *err, int code, const char *file, int line, int col,
                const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kw_error_vset(err, code, file, line, col, fmt, ap);
    va_end(ap);
    return code;
}

int kw_error_prefix(kw_error *err, const char *fmt, ...)
{
    if (!err)
        return 0;
    char pre[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    size_t n = strlen(pre); /* msg[n] is inside the message where its first n match */
    if (!strncmp(err->msg, pre, n) && !isalnum((unsigned char)err->msg[n]) && err->msg[n] != '_')
        return err->code; /* the message starts by naming it already */
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", pre, old);
    return err->code;
}

const char *kw_strerror(int code)
{
    switch (code) {
    case KW_OK: return "ok";
    case KW_END: return "end";
    case KW_PENDING: return "pending";
    case KW_EINVAL: return "invalid value";
    case KW_EPARSE: return "parse error";
    case KW_ETYPE: return "type mismatch";
    case KW_ERANGE: return "out of range";
    case KW_ENOTFOUND: return "not found";
    case KW_ECYCLE: return "cycle";
    case KW_EABI: return "ABI mismatch";
    case KW_EFORMAT: return "bad format";
    case KW_ELIMIT: return "limit exceeded";
    case KW_EDB: return "database error";
    case KW_ENOMEM: return "out of memory";
    case KW_EIO: return "I/O error";
    case KW_ECUDA: return "CUDA error";
    case KW_EINTERNAL: return "internal error";
    case KW_ENOSYS: return "not available in this build";
    case KW_ESAMPLE: return "sample failed";
    case KW_ECANCELED: return "canceled";
    default: return "unknown error";
    }
}

int kw_exit_code(int code)
{
    if (code >= 0)
        return 0;
    return kw_is_input_error(code) ? 2 : 3;
}
