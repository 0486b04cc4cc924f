/* Fuzz target: a DeltaKV compressor checkpoint (compress.deltakv_load) — the safetensors
 * file, then the compressor's tensor names, kinds and shapes, for a 3-layer model of 32
 * values per token and a 2-layer one of 8. A libFuzzer target with -Dfuzz=true; else
 * replay.c's main() replays the corpus (corpus/deltakv). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/deltakv.h"
#include "kvweave/util.h"
#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kw_error err = {0};
    kw_st *st = NULL;
    if (kw_st_parse(data, size, "fuzz.safetensors", &st, &err) < 0)
        return 0; /* fuzz_safetensors covers the reader */
    static const int shapes[2][2] = {{3, 32}, {2, 8}};
    for (int k = 0; k < 2; k++) {
        kw_deltakv_comp *c = NULL;
        kw_error e = {0};
        int rc = kw__deltakv_from_st(&st, 1, "fuzz.safetensors", shapes[k][0], shapes[k][1],
                                     &c, &e);
        if (rc < 0) {
            if (!e.msg[0] || c)
                abort(); /* every failure explains itself and returns nothing */
            continue;
        }
        if (!c || c->latent < 1 || c->latent > shapes[k][1] || !c->down || !c->up)
            abort();
        /* a row through every layer's pair: finite inputs, no crash */
        float x[32], lat[32], y[32], *scr = NULL;
        for (int i = 0; i < 32; i++)
            x[i] = (float)(i % 7) * 0.125f - 0.3f;
        for (int l = 0; l < c->n_layer; l++) {
            const kw_deltakv_proj *d = &c->down[l], *u = &c->up[l];
            if (d->in != shapes[k][1] || d->out != c->latent || u->in != c->latent ||
                u->out != shapes[k][1])
                abort();
            int need = 2 * ((d->inter > u->inter ? d->inter : u->inter) + 1);
            free(scr);
            scr = malloc(sizeof(float) * (size_t)need);
            if (!scr)
                break;
            kw__deltakv_proj_apply(d, x, 1, lat, scr);
            kw__deltakv_proj_apply(u, lat, 1, y, scr);
        }
        free(scr);
        kw__compressor_free(c);
    }
    kw_st_free(st);
    return 0;
}
