/* placeholder: the device engine is filled in by its owner */
#include "kvweave/engine.h"

int kw_engine_open(const char *model_spec, const char *device, kw_engine **out,
                   kw_error *err)
{
    (void)device;
    *out = NULL;
    return kw_error_set(err, KW_ENOSYS, "model '%s': the device engine is not built yet",
                        model_spec);
}

kw_engine *kw_engine_close(kw_engine *e) { (void)e; return NULL; }
const kw_model *kw_engine_model(const kw_engine *e) { (void)e; return NULL; }
