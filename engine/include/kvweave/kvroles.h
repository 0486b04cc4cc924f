/* kvweave — the roles of KV methods and the rule for stacking them.
 *
 * A KV method EVICTs (drops tokens), SELECTs (chooses what attention reads) or STOREs
 * (decides where and in what form KV lives), or several of these. A decode stage stacks
 * the methods of its inputs; the stack holds at most one EVICT method and at most one
 * STORE method, and any number of SELECT methods (applied in order).
 *
 * Two ABIs carry roles and share this rule: a hook declares its roles (kw_kvhook.roles,
 * kvhook.h), checked by kw_hookstack_check when a decode stage submits; an operator
 * whose output is a kvmethod declares the roles of the hook it makes (kw_op.kv_roles,
 * op.h), so that a pipeline is checked when it is built, before anything runs:
 *
 *   uint32_t roles[] = {KW_ROLE_EVICT, KW_ROLE_SELECT, KW_ROLE_EVICT};
 *   int a, b;
 *   uint32_t r = kw_kvroles_conflict(roles, 3, &a, &b); // KW_ROLE_EVICT, a = 0, b = 2
 */
#ifndef KVWEAVE_KVROLES_H
#define KVWEAVE_KVROLES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { /* kw_kvhook.roles, kw_op.kv_roles */
    KW_ROLE_EVICT = 1u << 0,  /* physically drops tokens */
    KW_ROLE_SELECT = 1u << 1, /* chooses what attention reads */
    KW_ROLE_STORE = 1u << 2,  /* where and in what form KV lives */
};
#define KW_ROLES_ALL (KW_ROLE_EVICT | KW_ROLE_SELECT | KW_ROLE_STORE)

/* The stack rule over the roles of a stack's methods, in stack order: 0 when the stack
 * is allowed, else the role (one bit) that more than one method holds, EVICT before
 * STORE; *first and *second (nullable) get the indices of its first two holders. */
uint32_t kw_kvroles_conflict(const uint32_t *roles, int n, int *first, int *second);

/* "EVICT", "EVICT+SELECT", ... into buf (n bytes); "none" for 0. Returns buf. */
const char *kw_kvroles_text(uint32_t roles, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
