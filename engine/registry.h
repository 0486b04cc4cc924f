/* Operator registry: the built-in table plus plug-ins (shared objects exporting
 * `kw_plugin_abi` and a NULL-terminated `kw_plugin_ops`). Internal to the engine. */
#ifndef KW_REGISTRY_H
#define KW_REGISTRY_H

#include "kvweave/op.h"

typedef struct kw_registry kw_registry;

/* builtins: NULL-terminated (transfer none; static). */
int kw_registry_new(const kw_op *const *builtins, kw_registry **out, kw_error *err);
kw_registry *kw_registry_free(kw_registry *r);
/* dlopen()s a plug-in; KW_EABI when its kw_plugin_abi or an op's abi differs, with both
 * numbers in the message; KW_EINVAL on a duplicate operator name. */
int kw_registry_load_plugin(kw_registry *r, const char *path, kw_error *err);
/* Every *.so in the ':'-separated directories/files of $KVWEAVE_PLUGIN_PATH. */
int kw_registry_load_env(kw_registry *r, kw_error *err);
const kw_op *kw_registry_find(const kw_registry *r, const char *name);
/* The registered name nearest to `name` (edit distance), or NULL if none is close. */
const char *kw_registry_suggest(const kw_registry *r, const char *name);
/* Internal: the name in names[0..n) nearest to name by edit distance, or NULL when none
 * is within max(2, strlen(name)/3) edits. Shared by the graph builder's suggestions. */
const char *kw__nearest(const char *name, const char *const *names, int n);
int kw_registry_count(const kw_registry *r);
const kw_op *kw_registry_at(const kw_registry *r, int i);

#endif
