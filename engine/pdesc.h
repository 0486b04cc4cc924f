/* The parsed pipeline description (kw_pdesc of graph.h), shared by pipeline.c (which
 * builds it from YAML), graph.c (which types and resolves it) and plan.c. It knows only
 * names and raw values: every value keeps its YAML node with its style and place, and is
 * typed against an operator's schema only by the graph builder.
 *
 * A value set on the command line (`--set k=v`) or by a sweep cell has line 0 and an
 * `origin` ("--set gen.max_new" or "sweep gen.max_new") used in messages instead of
 * the file name. */
#ifndef KW_PDESC_H
#define KW_PDESC_H

#include <stdbool.h>
#include <stddef.h>

#include "graph.h"

typedef enum kw_ykind { KW_Y_SCALAR, KW_Y_SEQ, KW_Y_MAP } kw_ykind;

/* A YAML node. Maps hold keys and values alternately in items (keys are scalars). */
typedef struct kw_ynode {
    kw_ykind kind;
    bool quoted;             /* scalar not in plain style (or tagged !!str): a string */
    char *text;              /* scalar text, NUL-terminated (owned) */
    size_t len;
    struct kw_ynode **items; /* (n) children (owned) */
    int n;
    int line, col;           /* 1-based; 0 when from the command line */
} kw_ynode;

/* `key: value` with the place of the key; origin NULL = the pipeline file. */
typedef struct kw_pkv {
    char *key;
    kw_ynode *val;           /* owned */
    char *origin;            /* owned, nullable */
    int line, col;
} kw_pkv;

typedef struct kw_pref {     /* one entry of `in:` ("stage" or "stage.port") */
    char *text;
    int line, col;
} kw_pref;

typedef struct kw_pstage {
    char *id;
    char *op;
    int op_line, op_col;
    kw_pref *in;
    int n_in;
    bool has_in;             /* `in:` was given (possibly empty) */
    kw_pkv *with;
    int n_with;
    int line, col;
} kw_pstage;

typedef struct kw_paxis {    /* one sweep axis: `stage.param: [v1, v2]` */
    char *key;
    kw_ynode *vals;          /* a sequence (owned) */
    int line, col;
} kw_paxis;

struct kw_pdesc {
    char *file;              /* path or name used in messages */
    char *dir;               /* directory of the file ("." for parsed text) */
    char *text;              /* the YAML text (NUL-terminated) */
    size_t n_text;
    char *name;
    int name_line, name_col;
    kw_pkv model;            /* key "model"; val NULL when absent */
    kw_pkv *run;             /* device, limit, seed, db */
    int n_run;
    kw_pkv *calib;           /* sample_ratio, n, seed */
    int n_calib;
    kw_pref *plugins;
    int n_plugins;
    kw_pstage *stages;       /* the dataset stage (id "dataset") first when given */
    int n_stages;
    bool has_dataset;
    kw_paxis *sweep;
    int n_sweep;
    char *label;             /* kw_pdesc_cell_label's buffer */
    char *cell_label;        /* of a sweep cell ("" otherwise) */
};

/* Node helpers (yamltree.c). */
/* YAML text -> one tree; *out is NULL for an empty document. Limits of graph.h. */
int kw__yaml_tree(const char *name, const char *text, size_t n, kw_ynode **out,
                  kw_error *err);
kw_ynode *kw__ynode_free(kw_ynode *n);
kw_ynode *kw__ynode_copy(const kw_ynode *n);
/* Parses one YAML scalar or flow collection given on the command line. */
int kw__ynode_parse_value(const char *origin, const char *text, kw_ynode **out,
                          kw_error *err);
/* Appends the node as YAML flow text ("[1, 2]", "x") to a malloc'd string. */
char *kw__ynode_text(const kw_ynode *n);
const kw_pkv *kw__pkv_find(const kw_pkv *kv, int n, const char *key);

#endif
