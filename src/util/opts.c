/*
 * opts.c - "-o key=value,..." lists, as qemu's option parser reads them:
 * ",," stands for a literal comma; a later key overrides an earlier one.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

static char *take_token(const char **sp, const char *stops)
{
    const char *s = *sp;
    size_t cap = strlen(s) + 1, n = 0;
    char *out = malloc(cap);

    if (!out)
        return NULL;
    while (*s) {
        if (*s == ',' && s[1] == ',') {
            out[n++] = ',';
            s += 2;
            continue;
        }
        if (strchr(stops, *s))
            break;
        out[n++] = *s++;
    }
    out[n] = 0;
    *sp = s;
    return out;
}

int opts_parse(struct opts *o, const char *s)
{
    while (*s) {
        char *key, *val = NULL;
        struct opt_kv *nv;

        key = take_token(&s, ",=");
        if (!key)
            return -ENOMEM;
        if (*s == '=') {
            s++;
            val = take_token(&s, ",");
            if (!val) {
                free(key);
                return -ENOMEM;
            }
        }
        if (*s == ',')
            s++;
        if (!*key) {
            free(key);
            free(val);
            return err_set(-EINVAL, "Invalid parameter ''");
        }
        /* A later value for the same key replaces the earlier one. */
        for (size_t i = 0; i < o->n; i++) {
            if (!strcmp(o->v[i].key, key)) {
                free(o->v[i].val);
                o->v[i].val = val;
                free(key);
                key = NULL;
                break;
            }
        }
        if (!key)
            continue;
        nv = realloc(o->v, (o->n + 1) * sizeof(*nv));
        if (!nv) {
            free(key);
            free(val);
            return -ENOMEM;
        }
        o->v = nv;
        o->v[o->n++] = (struct opt_kv){ key, val, false };
    }
    return 0;
}

static struct opt_kv *find(struct opts *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->v[i].key, key))
            return &o->v[i];
    return NULL;
}

const char *opts_get(struct opts *o, const char *key)
{
    struct opt_kv *kv = find(o, key);

    if (!kv)
        return NULL;
    kv->used = true;
    return kv->val ? kv->val : "";
}

bool opts_has(struct opts *o, const char *key)
{
    return find(o, key) != NULL;
}

const char *opts_unused(const struct opts *o)
{
    for (size_t i = 0; i < o->n; i++)
        if (!o->v[i].used)
            return o->v[i].key;
    return NULL;
}

void opts_free(struct opts *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->v[i].key);
        free(o->v[i].val);
    }
    free(o->v);
    o->v = NULL;
    o->n = 0;
}

int parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "yes")) {
        *out = true;
        return 0;
    }
    if (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "no")) {
        *out = false;
        return 0;
    }
    return -EINVAL;
}

/* qemu-img's is_valid_option_list(). */
bool opts_valid_list(const char *s)
{
    size_t n = strlen(s);

    if (!n || s[0] == ',')
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ',') {
            if (s[i + 1] == ',')
                i++;
            else if (!s[i + 1])
                return false;
        }
    return true;
}
