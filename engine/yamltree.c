/* YAML text -> a tree of kw_ynode (pdesc.h), from libyaml's event stream.
 *
 * Own tree rather than libyaml's document API so that limits hold while reading: the
 * nesting depth, the number of aliases and the number of nodes after alias expansion
 * (a billion-laughs document stops at KW_PIPELINE_MAX_NODES instead of expanding).
 * Aliases are expanded by copying; an anchor becomes visible when its node ends, so a
 * node cannot contain itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "pdesc.h"

kw_ynode *kw__ynode_free(kw_ynode *n)
{
    if (!n)
        return NULL;
    for (int i = 0; i < n->n; i++)
        kw__ynode_free(n->items[i]);
    free(n->items);
    free(n->text);
    free(n);
    return NULL;
}

typedef struct ybuild {
    const char *name;
    long n_nodes;
    size_t n_bytes;
    int n_alias;
    struct { char *name; kw_ynode *node; } *anchors;
    int n_anchors;
    kw_ynode *stack[KW_PIPELINE_MAX_DEPTH + 2];
    int depth;
    kw_ynode *root;
    int n_docs;
    kw_error *err;
} ybuild;

static int budget(ybuild *b, size_t bytes, int line, int col)
{
    b->n_nodes++;
    b->n_bytes += bytes;
    if (b->n_nodes > KW_PIPELINE_MAX_NODES)
        return kw_error_at(b->err, KW_ELIMIT, b->name, line, col,
                           "document too large: more than %d nodes (after alias expansion)",
                           KW_PIPELINE_MAX_NODES);
    if (b->n_bytes > 4 * (size_t)KW_PIPELINE_MAX_BYTES)
        return kw_error_at(b->err, KW_ELIMIT, b->name, line, col,
                           "document too large: more than %d bytes of text (after alias "
                           "expansion)", 4 * KW_PIPELINE_MAX_BYTES);
    return KW_OK;
}

static kw_ynode *copy_rec(const kw_ynode *n, ybuild *b, int *rc)
{
    if (b && (*rc = budget(b, n->len, n->line, n->col)) < 0)
        return NULL;
    kw_ynode *c = calloc(1, sizeof *c);
    if (!c)
        goto oom;
    *c = *n;
    c->text = NULL;
    c->items = NULL;
    c->n = 0;
    if (n->text && !(c->text = malloc(n->len + 1)))
        goto oom;
    if (n->text)
        memcpy(c->text, n->text, n->len + 1);
    if (n->n && !(c->items = calloc((size_t)n->n, sizeof *c->items)))
        goto oom;
    for (int i = 0; i < n->n; i++) {
        if (!(c->items[i] = copy_rec(n->items[i], b, rc))) {
            kw__ynode_free(c);
            return NULL;
        }
        c->n++;
    }
    return c;
oom:
    kw__ynode_free(c);
    *rc = KW_ENOMEM;
    return NULL;
}

kw_ynode *kw__ynode_copy(const kw_ynode *n)
{
    int rc = 0;
    return n ? copy_rec(n, NULL, &rc) : NULL;
}

static int append(kw_ynode *parent, kw_ynode *child)
{
    if (!(parent->n & (parent->n - 1))) { /* grow at powers of two */
        int cap = parent->n ? 2 * parent->n : 4;
        kw_ynode **it = realloc(parent->items, (size_t)cap * sizeof *it);
        if (!it)
            return KW_ENOMEM;
        parent->items = it;
    }
    parent->items[parent->n++] = child;
    return KW_OK;
}

/* Attaches a finished node to its parent (or as the root); checks map keys. */
static int attach(ybuild *b, kw_ynode *node)
{
    if (b->depth == 0) {
        if (b->root) {
            kw__ynode_free(node);
            return kw_error_at(b->err, KW_EPARSE, b->name, node->line, node->col,
                               "expected one YAML document");
        }
        b->root = node;
        return KW_OK;
    }
    kw_ynode *p = b->stack[b->depth - 1];
    if (p->kind == KW_Y_MAP && p->n % 2 == 0) {
        if (node->kind != KW_Y_SCALAR) {
            int l = node->line, c = node->col;
            kw__ynode_free(node);
            return kw_error_at(b->err, KW_EPARSE, b->name, l, c,
                               "a mapping key must be a plain name");
        }
        for (int i = 0; i < p->n; i += 2)
            if (!strcmp(p->items[i]->text, node->text)) {
                int rc = kw_error_at(b->err, KW_EPARSE, b->name, node->line, node->col,
                                     "duplicate key '%s' (first at line %d)", node->text,
                                     p->items[i]->line);
                kw__ynode_free(node);
                return rc;
            }
    }
    if (append(p, node) < 0) {
        kw__ynode_free(node);
        return kw_error_set(b->err, KW_ENOMEM, "out of memory");
    }
    return KW_OK;
}

static int add_anchor(ybuild *b, const char *name, kw_ynode *node)
{
    for (int i = 0; i < b->n_anchors; i++)
        if (!strcmp(b->anchors[i].name, name)) {
            b->anchors[i].node = node;
            return KW_OK;
        }
    void *a = realloc(b->anchors, (size_t)(b->n_anchors + 1) * sizeof *b->anchors);
    if (!a)
        return kw_error_set(b->err, KW_ENOMEM, "out of memory");
    b->anchors = a;
    if (!(b->anchors[b->n_anchors].name = strdup(name)))
        return kw_error_set(b->err, KW_ENOMEM, "out of memory");
    b->anchors[b->n_anchors++].node = node;
    return KW_OK;
}

static int on_alias(ybuild *b, const yaml_event_t *e, int line, int col)
{
    if (++b->n_alias > KW_PIPELINE_MAX_ALIASES)
        return kw_error_at(b->err, KW_ELIMIT, b->name, line, col,
                           "too many aliases: more than %d", KW_PIPELINE_MAX_ALIASES);
    const char *name = (const char *)e->data.alias.anchor;
    for (int i = b->n_anchors - 1; i >= 0; i--)
        if (!strcmp(b->anchors[i].name, name)) {
            int rc = 0;
            kw_ynode *c = copy_rec(b->anchors[i].node, b, &rc);
            if (!c)
                return rc == KW_ENOMEM ? kw_error_set(b->err, rc, "out of memory") : rc;
            return attach(b, c);
        }
    return kw_error_at(b->err, KW_EPARSE, b->name, line, col, "unknown alias '*%s'", name);
}

/* !!str makes a string; the other core tags are accepted as the plain style. */
static int scalar_style(ybuild *b, const yaml_event_t *e, int line, int col, bool *quoted)
{
    const char *tag = (const char *)e->data.scalar.tag;
    *quoted = e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    if (!tag || !strcmp(tag, "!"))
        return KW_OK;
    if (!strcmp(tag, YAML_STR_TAG)) {
        *quoted = true;
        return KW_OK;
    }
    if (!strcmp(tag, YAML_INT_TAG) || !strcmp(tag, YAML_FLOAT_TAG) ||
        !strcmp(tag, YAML_BOOL_TAG) || !strcmp(tag, YAML_NULL_TAG)) {
        *quoted = false;
        return KW_OK;
    }
    return kw_error_at(b->err, KW_EPARSE, b->name, line, col, "unsupported tag '%s'", tag);
}

static int start_node(ybuild *b, kw_ykind kind, const yaml_char_t *anchor, int line, int col,
                      kw_ynode **out)
{
    (void)anchor;
    if (b->depth >= KW_PIPELINE_MAX_DEPTH)
        return kw_error_at(b->err, KW_ELIMIT, b->name, line, col,
                           "nesting too deep: more than %d levels", KW_PIPELINE_MAX_DEPTH);
    int rc = budget(b, 0, line, col);
    if (rc < 0)
        return rc;
    kw_ynode *n = calloc(1, sizeof *n);
    if (!n)
        return kw_error_set(b->err, KW_ENOMEM, "out of memory");
    n->kind = kind;
    n->line = line;
    n->col = col;
    *out = n;
    return KW_OK;
}

static int on_scalar(ybuild *b, const yaml_event_t *e, int line, int col)
{
    kw_ynode *n;
    int rc = start_node(b, KW_Y_SCALAR, e->data.scalar.anchor, line, col, &n);
    if (rc < 0)
        return rc;
    if ((rc = scalar_style(b, e, line, col, &n->quoted)) < 0 ||
        (rc = budget(b, e->data.scalar.length, line, col)) < 0) {
        kw__ynode_free(n);
        return rc;
    }
    n->len = e->data.scalar.length;
    if (!(n->text = malloc(n->len + 1))) {
        kw__ynode_free(n);
        return kw_error_set(b->err, KW_ENOMEM, "out of memory");
    }
    memcpy(n->text, e->data.scalar.value, n->len);
    n->text[n->len] = '\0';
    if (memchr(n->text, '\0', n->len)) {
        kw__ynode_free(n);
        return kw_error_at(b->err, KW_EPARSE, b->name, line, col, "NUL byte in a value");
    }
    if ((rc = attach(b, n)) < 0)
        return rc;
    if (e->data.scalar.anchor)
        return add_anchor(b, (const char *)e->data.scalar.anchor, n);
    return KW_OK;
}

static int on_end(ybuild *b)
{
    kw_ynode *n = b->stack[--b->depth];
    const char *anchor = (const char *)n->text; /* the anchor name was parked here */
    n->text = NULL;
    int rc = attach(b, n);
    if (rc >= 0 && anchor)
        rc = add_anchor(b, anchor, n);
    free((char *)anchor);
    return rc;
}

static int on_event(ybuild *b, const yaml_event_t *e)
{
    int line = (int)e->start_mark.line + 1, col = (int)e->start_mark.column + 1;
    kw_ynode *n;
    int rc;
    switch (e->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++b->n_docs > 1)
            return kw_error_at(b->err, KW_EPARSE, b->name, line, col,
                               "expected one YAML document, found a second");
        return KW_OK;
    case YAML_SCALAR_EVENT:
        return on_scalar(b, e, line, col);
    case YAML_ALIAS_EVENT:
        return on_alias(b, e, line, col);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool seq = e->type == YAML_SEQUENCE_START_EVENT;
        const yaml_char_t *anchor = seq ? e->data.sequence_start.anchor
                                        : e->data.mapping_start.anchor;
        if ((rc = start_node(b, seq ? KW_Y_SEQ : KW_Y_MAP, anchor, line, col, &n)) < 0)
            return rc;
        if (anchor && !(n->text = strdup((const char *)anchor))) {
            kw__ynode_free(n);
            return kw_error_set(b->err, KW_ENOMEM, "out of memory");
        }
        b->stack[b->depth++] = n;
        return KW_OK;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return on_end(b);
    default:
        return KW_OK;
    }
}

static int parse_error(ybuild *b, const yaml_parser_t *p)
{
    int line = (int)p->problem_mark.line + 1, col = (int)p->problem_mark.column + 1;
    if (p->error == YAML_MEMORY_ERROR)
        return kw_error_set(b->err, KW_ENOMEM, "out of memory parsing %s", b->name);
    if (p->context)
        return kw_error_at(b->err, KW_EPARSE, b->name, line, col,
                           "not valid YAML: %s %s (line %d, column %d)",
                           p->problem ? p->problem : "error", p->context,
                           (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    return kw_error_at(b->err, KW_EPARSE, b->name, line, col, "not valid YAML: %s",
                       p->problem ? p->problem : "error");
}

int kw__yaml_tree(const char *name, const char *text, size_t n, kw_ynode **out,
                  kw_error *err)
{
    *out = NULL;
    if (n > KW_PIPELINE_MAX_BYTES)
        return kw_error_at(err, KW_ELIMIT, name, 0, 0,
                           "file too large: %zu bytes, the limit is %d", n,
                           KW_PIPELINE_MAX_BYTES);
    ybuild b = {.name = name, .err = err};
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return kw_error_set(err, KW_ENOMEM, "out of memory");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, n);
    int rc = KW_OK;
    for (;;) {
        yaml_event_t e;
        if (!yaml_parser_parse(&p, &e)) {
            rc = parse_error(&b, &p);
            break;
        }
        bool end = e.type == YAML_STREAM_END_EVENT;
        rc = on_event(&b, &e);
        yaml_event_delete(&e);
        if (rc < 0 || end)
            break;
    }
    yaml_parser_delete(&p);
    while (b.depth > 0) {
        kw_ynode *s = b.stack[--b.depth];
        kw__ynode_free(s);
    }
    for (int i = 0; i < b.n_anchors; i++)
        free(b.anchors[i].name);
    free(b.anchors);
    if (rc < 0) {
        kw__ynode_free(b.root);
        return rc;
    }
    *out = b.root;
    return KW_OK;
}

/* ---- flow text of a node (labels, plan output) ---- */

typedef struct sbuf {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *sb, const char *s, size_t n)
{
    if (sb->oom)
        return;
    if (sb->n + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 64;
        while (cap < sb->n + n + 1)
            cap *= 2;
        char *ns = realloc(sb->s, cap);
        if (!ns) {
            sb->oom = true;
            return;
        }
        sb->s = ns;
        sb->cap = cap;
    }
    memcpy(sb->s + sb->n, s, n);
    sb->n += n;
    sb->s[sb->n] = '\0';
}

static void text_rec(sbuf *sb, const kw_ynode *n)
{
    if (n->kind == KW_Y_SCALAR) {
        if (n->quoted)
            sb_put(sb, "\"", 1);
        sb_put(sb, n->text, n->len);
        if (n->quoted)
            sb_put(sb, "\"", 1);
        return;
    }
    bool map = n->kind == KW_Y_MAP;
    sb_put(sb, map ? "{" : "[", 1);
    for (int i = 0; i < n->n; i++) {
        if (i)
            sb_put(sb, map && i % 2 ? ": " : ", ", 2);
        text_rec(sb, n->items[i]);
    }
    sb_put(sb, map ? "}" : "]", 1);
}

char *kw__ynode_text(const kw_ynode *n)
{
    sbuf sb = {0};
    sb_put(&sb, "", 0);
    if (n)
        text_rec(&sb, n);
    if (sb.oom) {
        free(sb.s);
        return NULL;
    }
    return sb.s;
}

static void clear_place(kw_ynode *n)
{
    n->line = n->col = 0;
    for (int i = 0; i < n->n; i++)
        clear_place(n->items[i]);
}

int kw__ynode_parse_value(const char *origin, const char *text, kw_ynode **out,
                          kw_error *err)
{
    kw_ynode *root;
    int rc = kw__yaml_tree(origin, text, strlen(text), &root, err);
    if (rc < 0)
        return rc;
    if (!root) { /* empty: an empty plain scalar */
        if (!(root = calloc(1, sizeof *root)) || !(root->text = strdup(""))) {
            free(root);
            return kw_error_set(err, KW_ENOMEM, "out of memory");
        }
    }
    if (root->kind == KW_Y_MAP) {
        kw__ynode_free(root);
        return kw_error_at(err, KW_EINVAL, origin, 0, 0,
                           "expected a value or a [list], got a mapping");
    }
    clear_place(root); /* command-line values have no place in the file */
    *out = root;
    return KW_OK;
}
