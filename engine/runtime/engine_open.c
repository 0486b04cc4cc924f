/* Opening an engine from a model name or path (kept apart from batch.c so that code
 * using an in-memory model does not link the model loaders). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kw_config.h"

#include "engine_internal.h"

int kw_engine_open_opts(const char *model_spec, const char *device, const kw_engine_opts *o,
                        kw_engine **out, kw_error *err)
{
    *out = NULL;
    kw_engine_opts oo = o ? *o : kw_engine_defaults();
    if (device && strcmp(device, "cpu") != 0) {
        char *end = NULL;
        long n = 0;
        if (!strncmp(device, "cuda", 4) && device[4] == ':')
            n = strtol(device + 5, &end, 10);
        bool ok = !strcmp(device, "cuda") || (end && end != device + 5 && !*end && n >= 0);
        if (!ok)
            return kw_error_set(err, KW_EINVAL, "engine: unknown device '%s' (cpu, cuda or "
                                "cuda:N)", device);
#if !KW_HAVE_CUDA
        return kw_error_set(err, KW_ENOSYS, "engine: device '%s' is not available in this "
                            "build (only 'cpu')", device);
#endif
        oo.cuda = true;
        oo.cuda_device = (int)n;
    }
    kw_model *m;
    int rc = kw_model_open(model_spec, &m, err);
    if (rc < 0)
        return rc;
    rc = kw_engine_open_model(m, &oo, out, err);
    if (rc < 0) {
        kw_model_free(m);
        return kw_error_prefix(err, "model '%s'", model_spec);
    }
    kw__engine_own_model(*out, m, kw_model_free);
    return 0;
}

int kw_engine_open(const char *model_spec, const char *device, kw_engine **out,
                   kw_error *err)
{
    return kw_engine_open_opts(model_spec, device, NULL, out, err);
}
