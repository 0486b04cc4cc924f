/* The stack rule of KV method roles (kvroles.h), shared by the graph builder and the
 * device engine's hook stacks. */
#include <stdio.h>

#include "kvweave/kvroles.h"

uint32_t kw_kvroles_conflict(const uint32_t *roles, int n, int *first, int *second)
{
    static const uint32_t once[] = {KW_ROLE_EVICT, KW_ROLE_STORE};
    for (size_t r = 0; r < sizeof once / sizeof once[0]; r++) {
        int a = -1;
        for (int i = 0; i < n; i++) {
            if (!(roles[i] & once[r]))
                continue;
            if (a < 0) {
                a = i;
                continue;
            }
            if (first)
                *first = a;
            if (second)
                *second = i;
            return once[r];
        }
    }
    return 0;
}

const char *kw_kvroles_text(uint32_t roles, char *buf, size_t n)
{
    static const struct { uint32_t bit; const char *name; } names[] = {
        {KW_ROLE_EVICT, "EVICT"}, {KW_ROLE_SELECT, "SELECT"}, {KW_ROLE_STORE, "STORE"}};
    size_t len = 0;
    if (!n)
        return buf;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0] && len < n; i++)
        if (roles & names[i].bit)
            len += (size_t)snprintf(buf + len, n - len, "%s%s", len ? "+" : "", names[i].name);
    if (roles & ~(uint32_t)KW_ROLES_ALL && len < n)
        len += (size_t)snprintf(buf + len, n - len, "%s0x%x", len ? "+" : "",
                                (unsigned)(roles & ~(uint32_t)KW_ROLES_ALL));
    if (!roles)
        snprintf(buf, n, "none");
    return buf;
}
