/* Fuzz target for what the hub sends kvweave: HTTP header lines, tree API pages, and
 * the names users write. The first byte picks the parser, the rest is its input.
 * A libFuzzer target with -Dfuzz=true; else tests/fuzz/replay.c's main() replays the
 * corpus. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "hub_internal.h"
#include "kvweave/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void headers(const char *s, size_t n)
{
    kw__hub_resp r = {0};
    kw__hub_resp_clear(&r);
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t len = nl ? (size_t)(nl - (s + i)) + 1 : n - i;
        kw__hub_header_line(&r, s + i, len);
        i += len;
    }
    kw__hub_resp_clear(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20))
        return 0;
    char *s = malloc(size);
    if (!s)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    size_t n = size - 1;
    kw_error err = {0};
    switch (data[0] % 4) {
    case 0:
        headers(s, n);
        break;
    case 1: {
        kw__hub_list l = {0};
        const char *inc[] = {"*.json", "sub/", NULL};
        kw__hub_tree_parse(s, n, "fuzz", data[0] & 4 ? inc : NULL, &l, &err);
        kw__hub_list_free(&l);
        break;
    }
    case 2: {
        char out[300];
        kw_hub_is_name(s);
        kw__hub_valid_path(s);
        kw__hub_normalize_etag(s, out, sizeof out);
        kw__hub_quote(s, data[0] & 4, out, sizeof out);
        break;
    }
    default: {
        char o[512];
        kw__hub_origin(s, o, sizeof o);
        kw__hub_url_clean(s, o, sizeof o);
        break;
    }
    }
    free(s);
    return 0;
}
