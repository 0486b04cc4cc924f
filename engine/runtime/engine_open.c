/* Opening an engine from a model name or path (kept apart from batch.c so that code
 * using an in-memory model does not link the model loaders). */
#include <string.h>

#include "engine_internal.h"

int kw_engine_open_opts(const char *model_spec, const char *device, const kw_engine_opts *o,
                        kw_engine **out, kw_error *err)
{
    *out = NULL;
    if (device && strcmp(device, "cpu") != 0)
        return kw_error_set(err, KW_ENOSYS, "engine: device '%s' is not available in this "
                            "build (only 'cpu')", device);
    kw_model *m;
    int rc = kw_model_open(model_spec, &m, err);
    if (rc < 0)
        return rc;
    rc = kw_engine_open_model(m, o, out, err);
    if (rc < 0) {
        kw_model_free(m);
        return kw_error_prefix(err, "model '%s': ", model_spec);
    }
    kw__engine_own_model(*out, m, kw_model_free);
    return 0;
}

int kw_engine_open(const char *model_spec, const char *device, kw_engine **out,
                   kw_error *err)
{
    return kw_engine_open_opts(model_spec, device, NULL, out, err);
}
