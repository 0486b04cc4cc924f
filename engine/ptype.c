/* Typing raw YAML values against a parameter schema (kw_param_spec).
 *
 * YAML 1.2 core schema, strictly: only plain scalars are numbers or booleans; `yes`,
 * `no`, `on`, `off` are not booleans (a hint says so); a STRING param takes any scalar's
 * text as written, so `no` stays "no". */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kvweave/util.h"
#include "ptype.h"
#include "registry.h"

static int why(char *buf, size_t n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int why(char *buf, size_t n, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return code;
}

/* Decimal, 0x hex or 0o octal, with an optional sign. */
int kw__parse_int(const char *s, int64_t *out)
{
    const char *p = s;
    bool neg = *p == '-';
    if (*p == '-' || *p == '+')
        p++;
    int base = 10;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    } else if (p[0] == '0' && p[1] == 'o') {
        base = 8;
        p += 2;
    }
    if (!*p)
        return KW_ETYPE;
    uint64_t v = 0;
    for (; *p; p++) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (base == 16 && ((*p | 32) >= 'a' && (*p | 32) <= 'f'))
            d = (*p | 32) - 'a' + 10;
        else
            return KW_ETYPE;
        if (d >= base)
            return KW_ETYPE;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            return KW_ERANGE;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    if (v > (uint64_t)INT64_MAX + (neg ? 1u : 0u))
        return KW_ERANGE;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return KW_OK;
}

/* [-+]? ( . digits | digits ( . digits? )? ) ( [eE] [-+]? digits )?, or .inf / .nan. */
int kw__parse_float(const char *s, double *out)
{
    const char *p = s;
    bool neg = *p == '-';
    if (*p == '-' || *p == '+')
        p++;
    if (!strcmp(p, ".inf") || !strcmp(p, ".Inf") || !strcmp(p, ".INF")) {
        *out = neg ? -INFINITY : INFINITY;
        return KW_OK;
    }
    if (p == s && (!strcmp(p, ".nan") || !strcmp(p, ".NaN") || !strcmp(p, ".NAN"))) {
        *out = NAN;
        return KW_OK;
    }
    int digits = 0;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++, digits++;
    }
    if (!digits)
        return KW_ETYPE;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return KW_ETYPE;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p)
        return KW_ETYPE;
    errno = 0;
    *out = strtod(s, NULL);
    return errno == ERANGE && isinf(*out) ? KW_ERANGE : KW_OK;
}

/* String params may name environment variables: ${NAME} or ${NAME:-default} ("$$" is a
 * dollar). ${KVWEAVE_DATA} and ${KVWEAVE_HOME} default to kvweave's own defaults, so
 * pipelines can point at data sets wherever they live. */
static int expand_env(const char *in, char **out, char *w, size_t nw)
{
    size_t cap = strlen(in) + 1, n = 0;
    char *o = malloc(cap);
    if (!o)
        return why(w, nw, KW_ENOMEM, "out of memory");
    for (const char *p = in; *p;) {
        const char *add = p;
        size_t len = 1;
        char name[256];
        if (p[0] == '$' && p[1] == '$') {
            p += 2;
        } else if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            const char *dash = strstr(p + 2, ":-");
            if (!end) {
                free(o);
                return why(w, nw, KW_EPARSE, "has '${' without a closing '}'");
            }
            size_t nl = (size_t)((dash && dash < end ? dash : end) - (p + 2));
            if (nl == 0 || nl >= sizeof name) {
                free(o);
                return why(w, nw, KW_EPARSE, "has an empty or too long variable name in '${...}'");
            }
            memcpy(name, p + 2, nl);
            name[nl] = '\0';
            const char *v = getenv(name);
            if ((!v || !*v) && !strcmp(name, "KVWEAVE_DATA"))
                v = kw_data_dir();
            if ((!v || !*v) && !strcmp(name, "KVWEAVE_HOME"))
                v = kw_home();
            if ((!v || !*v) && dash && dash < end) {
                add = dash + 2;
                len = (size_t)(end - add);
            } else if (!v || !*v) {
                free(o);
                return why(w, nw, KW_ENOTFOUND,
                           "names the environment variable %s, which is not set (give a "
                           "default as ${%s:-VALUE})", name, name);
            } else {
                add = v;
                len = strlen(v);
            }
            p = end + 1;
        } else {
            p++;
        }
        if (n + len + 1 > cap) {
            cap = (n + len + 1) * 2;
            char *no = realloc(o, cap);
            if (!no) {
                free(o);
                return why(w, nw, KW_ENOMEM, "out of memory");
            }
            o = no;
        }
        memcpy(o + n, add, len);
        n += len;
    }
    o[n] = '\0';
    *out = o;
    return KW_OK;
}

static bool has_bounds(const kw_param_spec *sp) { return sp->min != 0 || sp->max != 0; }

static int int_value(const kw_ynode *n, const kw_param_spec *sp, int64_t *v, char *w, size_t nw)
{
    if (n->kind != KW_Y_SCALAR)
        return why(w, nw, KW_ETYPE, "wants an int, got a %s",
                   n->kind == KW_Y_SEQ ? "list" : "mapping");
    if (n->quoted)
        return why(w, nw, KW_ETYPE, "wants an int, got the quoted string \"%s\"", n->text);
    int rc = kw__parse_int(n->text, v);
    if (rc == KW_ERANGE)
        return why(w, nw, rc, "%s does not fit in a 64-bit int", n->text);
    if (rc < 0)
        return why(w, nw, rc, "wants an int, got '%s'", n->text);
    if (has_bounds(sp) && ((double)*v < sp->min || (double)*v > sp->max))
        return why(w, nw, KW_ERANGE, "%lld is out of range [%.15g, %.15g]", (long long)*v,
                   sp->min, sp->max);
    return KW_OK;
}

static int float_value(const kw_ynode *n, const kw_param_spec *sp, double *v, char *w,
                       size_t nw)
{
    if (n->kind != KW_Y_SCALAR)
        return why(w, nw, KW_ETYPE, "wants a number, got a %s",
                   n->kind == KW_Y_SEQ ? "list" : "mapping");
    if (n->quoted)
        return why(w, nw, KW_ETYPE, "wants a number, got the quoted string \"%s\"", n->text);
    int64_t i;
    int rc = kw__parse_int(n->text, &i);
    if (rc == KW_OK)
        *v = (double)i;
    else if ((rc = kw__parse_float(n->text, v)) == KW_ERANGE)
        return why(w, nw, rc, "%s is too large for a double", n->text);
    else if (rc < 0)
        return why(w, nw, rc, "wants a number, got '%s'", n->text);
    if (has_bounds(sp) && (isnan(*v) || *v < sp->min || *v > sp->max))
        return why(w, nw, KW_ERANGE, "%s is out of range [%.15g, %.15g]", n->text, sp->min,
                   sp->max);
    return KW_OK;
}

static int bool_value(const kw_ynode *n, int64_t *v, char *w, size_t nw)
{
    static const char *const yaml11[] = {"yes", "no", "on", "off", "y", "n"};
    if (n->kind != KW_Y_SCALAR)
        return why(w, nw, KW_ETYPE, "wants true or false, got a %s",
                   n->kind == KW_Y_SEQ ? "list" : "mapping");
    if (n->quoted)
        return why(w, nw, KW_ETYPE, "wants true or false, got the quoted string \"%s\"",
                   n->text);
    const char *s = n->text;
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
        *v = 1;
        return KW_OK;
    }
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
        *v = 0;
        return KW_OK;
    }
    for (size_t i = 0; i < sizeof yaml11 / sizeof *yaml11; i++)
        if (!strcasecmp(s, yaml11[i]))
            return why(w, nw, KW_ETYPE, "wants true or false, got '%s' (YAML 1.2: only "
                       "true and false are booleans)", s);
    return why(w, nw, KW_ETYPE, "wants true or false, got '%s'", s);
}

static int enum_value(const kw_ynode *n, const kw_param_spec *sp, char *w, size_t nw)
{
    const char *ch = sp->choices ? sp->choices : "";
    if (n->kind != KW_Y_SCALAR)
        return why(w, nw, KW_ETYPE, "wants one of %s, got a %s", ch,
                   n->kind == KW_Y_SEQ ? "list" : "mapping");
    const char *names[64];
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", ch);
    int k = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, "|", &save); t && k < 64; t = strtok_r(NULL, "|", &save)) {
        if (!strcmp(t, n->text))
            return KW_OK;
        names[k++] = t;
    }
    const char *near = kw__nearest(n->text, names, k);
    if (near)
        return why(w, nw, KW_EINVAL, "must be one of %s, got '%s' (did you mean '%s'?)", ch,
                   n->text, near);
    return why(w, nw, KW_EINVAL, "must be one of %s, got '%s'", ch, n->text);
}

static int push_int(kw_pval *pv, int64_t v)
{
    int64_t *ni = realloc(pv->ints, (size_t)(pv->n_ints + 1) * sizeof *ni);
    if (!ni)
        return KW_ENOMEM;
    pv->ints = ni;
    pv->ints[pv->n_ints++] = v;
    return KW_OK;
}

/* A sequence of ints, or a "0,1,2" string (an empty one is the empty list). */
static int intlist_value(const kw_ynode *n, const kw_param_spec *sp, kw_pval *pv, char *w,
                         size_t nw)
{
    int rc;
    if (n->kind == KW_Y_MAP)
        return why(w, nw, KW_ETYPE, "wants a list of ints, got a mapping");
    if (n->kind == KW_Y_SEQ) {
        for (int i = 0; i < n->n; i++) {
            int64_t v;
            if ((rc = int_value(n->items[i], sp, &v, w, nw)) < 0) {
                char inner[512];
                snprintf(inner, sizeof inner, "%s", w);
                return why(w, nw, rc, "item %d: %s", i + 1, inner);
            }
            if (push_int(pv, v) < 0)
                return why(w, nw, KW_ENOMEM, "out of memory");
        }
        return KW_OK;
    }
    char *copy = strdup(n->text), *save = NULL;
    if (!copy)
        return why(w, nw, KW_ENOMEM, "out of memory");
    rc = KW_OK;
    int item = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc >= 0; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        size_t l = strlen(t);
        while (l && t[l - 1] == ' ')
            t[--l] = '\0';
        kw_ynode x = {.kind = KW_Y_SCALAR, .text = t, .len = l};
        int64_t v;
        item++;
        if ((rc = int_value(&x, sp, &v, w, nw)) < 0) {
            char inner[512];
            snprintf(inner, sizeof inner, "%s", w);
            why(w, nw, rc, "item %d of \"%s\": %s", item, n->text, inner);
        } else if (push_int(pv, v) < 0)
            rc = why(w, nw, KW_ENOMEM, "out of memory");
    }
    free(copy);
    return rc;
}

int kw__param_value(const kw_ynode *n, const kw_param_spec *sp, kw_pval *pv, char *w,
                    size_t nw)
{
    memset(pv, 0, sizeof *pv);
    pv->kind = sp->kind;
    int rc;
    switch (sp->kind) {
    case KW_PARAM_INT:
        return int_value(n, sp, &pv->i, w, nw);
    case KW_PARAM_FLOAT:
        return float_value(n, sp, &pv->f, w, nw);
    case KW_PARAM_BOOL:
        return bool_value(n, &pv->i, w, nw);
    case KW_PARAM_ENUM:
        if ((rc = enum_value(n, sp, w, nw)) < 0)
            return rc;
        /* fall through */
    case KW_PARAM_STRING:
        if (n->kind != KW_Y_SCALAR)
            return why(w, nw, KW_ETYPE, "wants a string, got a %s",
                       n->kind == KW_Y_SEQ ? "list" : "mapping");
        if (sp->kind == KW_PARAM_STRING)
            return expand_env(n->text, &pv->s, w, nw);
        if (!(pv->s = strdup(n->text)))
            return why(w, nw, KW_ENOMEM, "out of memory");
        return KW_OK;
    case KW_PARAM_INTLIST:
        rc = intlist_value(n, sp, pv, w, nw);
        if (rc < 0) {
            free(pv->ints);
            pv->ints = NULL;
            pv->n_ints = 0;
        }
        return rc;
    }
    return why(w, nw, KW_EINTERNAL, "unknown param kind %d", (int)sp->kind);
}

void kw__pval_clear(kw_pval *pv)
{
    free(pv->s);
    free(pv->ints);
    pv->s = NULL;
    pv->ints = NULL;
    pv->n_ints = 0;
}
