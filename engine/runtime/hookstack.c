/* Hook stacks: role rules, and the kvmethod value type. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "kvweave/kvhook.h"

int kw_hookstack_check(const kw_hookstack *hs, kw_error *err)
{
    if (hs->n < 0 || hs->n > KW_MAX_HOOKS)
        return kw_error_set(err, KW_ELIMIT, "kv method stack: %d hooks, at most %d", hs->n,
                            KW_MAX_HOOKS);
    uint32_t roles[KW_MAX_HOOKS];
    for (int i = 0; i < hs->n; i++) {
        const kw_kvhook *h = hs->hooks[i];
        const char *nm = h && h->name ? h->name : "?";
        if (!h)
            return kw_error_set(err, KW_EINVAL, "kv method stack: hook %d is missing", i);
        if (h->abi != KW_KVHOOK_ABI || h->size < offsetof(kw_kvhook, tail_only))
            return kw_error_set(err, KW_EABI, "kv method '%s': hook abi %u size %u, the "
                                "engine has abi %d size %zu", nm, h->abi, h->size,
                                KW_KVHOOK_ABI, sizeof(kw_kvhook));
        if (!(h->roles & (KW_ROLE_EVICT | KW_ROLE_SELECT | KW_ROLE_STORE)))
            return kw_error_set(err, KW_EINVAL, "kv method '%s' declares no role", nm);
        roles[i] = h->roles;
    }
    int a, b;
    uint32_t r = kw_kvroles_conflict(roles, hs->n, &a, &b);
    if (r) {
        char rn[32];
        kw_kvroles_text(r, rn, sizeof rn);
        return kw_error_set(err, KW_EINVAL, "kv method stack: hooks %d '%s' and %d '%s' both "
                            "%s; a stack holds at most one %s hook", a,
                            hs->hooks[a]->name ? hs->hooks[a]->name : "?", b,
                            hs->hooks[b]->name ? hs->hooks[b]->name : "?", rn, rn);
    }
    return 0;
}

bool kw_kvhook_tail_only(const kw_kvhook *h)
{
    return h && h->size >= offsetof(kw_kvhook, tail_only) + sizeof(bool) && h->tail_only;
}

bool kw_kvhook_probs_at(const kw_kvhook *h, void *st, int layer)
{
    bool has = h->size >= offsetof(kw_kvhook, probs_at) + sizeof h->probs_at && h->probs_at;
    return !has || h->probs_at(st, layer);
}

uint32_t kw_hookstack_needs(const kw_hookstack *hs)
{
    uint32_t n = 0;
    for (int i = 0; i < hs->n; i++)
        n |= hs->hooks[i]->needs;
    return n;
}

static void kvmethod_free(void *p)
{
    kw_kvmethod *m = p;
    if (!m)
        return;
    if (m->params_free)
        m->params_free(m->params);
    free(m);
}

const kw_type kw_type_kvmethod = {.name = KW_T_KVMETHOD, .free = kvmethod_free};

kw_value *kw_value_kvmethod(kw_kvmethod *m) { return kw_value_new(&kw_type_kvmethod, m); }

int kw_seq_fail(kw_seq *s, int rc, const char *fmt, ...)
{
    if (!s->error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->error, sizeof s->error, fmt, ap);
        va_end(ap);
    }
    return rc;
}
