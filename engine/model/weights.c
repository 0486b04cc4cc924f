/* placeholder: the model loaders are filled in by their owner; until then opening a
 * model answers KW_ENOSYS. */
#include <stddef.h>

#include "kvweave/model.h"

int kw_model_open(const char *spec, kw_model **out, kw_error *err)
{
    *out = NULL;
    return kw_error_set(err, KW_ENOSYS, "model '%s': the model loaders are not built yet", spec);
}

kw_model *kw_model_free(kw_model *m) { (void)m; return NULL; }
const kw_tensor *kw_model_tensor(const kw_model *m, const char *name) { (void)m, (void)name; return NULL; }
