/* The method branches of one run, for `kvweave compare RUN --branches`.
 *
 * A run with several decode stages, or with several scoring stages of one operator (a
 * budget sweep: one of each per method and budget), records their figures keyed by stage
 * (engine/run_record.c): "<stage>/gen/..." and "<stage>/mem/..." for a decode stage,
 * "<stage>/<key>" for a scorer. Those keys are grouped here:
 *
 *   - a key "<A>/<rest>" is a stage's when A is a stage of the run and either its
 *     operator runs in another stage too, or rest starts with "gen/" or "mem/";
 *   - a branch is a keyed decode stage (its root: a stage with gen/ or mem/ keys) with
 *     the keyed stages downstream of it and of no other root; a keyed stage downstream
 *     of no root, or of several, is a branch of its own;
 *   - a branch is named by what its stages' ids share (the longest common substring, '_'
 *     and '-' trimmed; the first stage's id when that leaves less than 2 characters or
 *     two branches would share the name): gen_snapkv_10, snapkv_10_fid and
 *     snapkv_10_ppl make "snapkv_10";
 *   - a key's column is rest ("score", "mem/pages_peak"), or "<role>:<rest>" when two
 *     stages of one branch record the same rest (role: the stage id less the branch
 *     name, "ppl" for snapkv_10_ppl; none for the stage named as its branch).
 *
 *   const char *in_gen[] = {"tok"}, *in_score[] = {"gen_full", "dataset"};
 *   kw_bstage st[] = {{"tok", "tokenize.chat", NULL, 0},
 *                     {"gen_full", "decode.greedy", in_gen, 1},
 *                     {"full", "score.ruler", in_score, 2}, ...};
 *   const char *keys[] = {"gen_full/mem/pages_peak", "full/score", "wall_s", ...};
 *   kw_branches b;
 *   if (kw__branches_build(&b, st, n_st, keys, n_keys, &err) < 0) ...
 *   // b.v[0].name "full"; b.keys[1] = {.branch = 0, .stage = 2, .column = "score"};
 *   // b.keys[2].branch = -1 (a run-level figure)
 *   kw__branches_clear(&b);
 *
 * No store, no printing: the caller reads stages (ids and operators from the run's
 * params, wiring from its pipeline text) and keys, and shows the result.
 */
#ifndef KW_CLI_BRANCHES_H
#define KW_CLI_BRANCHES_H

#include "kvweave/status.h"

typedef struct kw_bstage {
    const char *id;
    const char *op;        /* operator name; nullable: unknown */
    const char *const *in; /* (n_in) upstream refs, "stage" or "stage.port"; nullable */
    int n_in;              /* 0 also when the wiring is unknown */
} kw_bstage;

typedef struct kw_branch {
    char *name;
    int root;    /* index of its decode stage in the stages given; -1 when none */
    int *stages; /* (n_stages) its keyed stages: the root first, then pipeline order */
    int n_stages;
} kw_branch;

typedef struct kw_bkey {
    int branch;   /* index in kw_branches.v; -1: not a branch's key (run-level figures) */
    int stage;    /* the stage that recorded it; -1 with branch -1 */
    char *column; /* the key within its branch; NULL with branch -1 */
} kw_bkey;

typedef struct kw_branches {
    kw_branch *v; /* (n) in pipeline order of their first stage */
    int n;
    kw_bkey *keys; /* (n_keys) one per key given, in the same order */
    int n_keys;
} kw_branches;

/* Stages in pipeline order. KW_ENOMEM only; a run without keyed stages has n == 0. */
int kw__branches_build(kw_branches *b, const kw_bstage *stages, int n_stages,
                       const char *const *keys, int n_keys, kw_error *err);
void kw__branches_clear(kw_branches *b);

/* The reference branch. ref given: the branch of that name, else the one holding a
 * stage of that id, else the only one whose name starts with ref; ref NULL: the branch
 * named "full", else the only one whose name contains "full". 0 and *idx when found;
 * with ref NULL, 1 when no name contains "full"; errors name the branches:
 * KW_ENOTFOUND (ref matches none), KW_EINVAL (several match). */
int kw__branches_reference(const kw_branches *b, const kw_bstage *stages, const char *ref,
                           int *idx, kw_error *err);

#endif
