/*
 * snapshot_table.c - the snapshot table as bytes: parse it into entries and
 * build it back. Pure functions (no I/O), bounds-checked on every field.
 * Extra data qimg does not understand is kept byte for byte.
 */
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

void qcow2_snapshots_free(struct qcow2_snapshot *sn, uint32_t count)
{
    if (!sn)
        return;
    for (uint32_t i = 0; i < count; i++) {
        free(sn[i].id);
        free(sn[i].name);
        free(sn[i].extra);
    }
    free(sn);
}

int qcow2_snapshots_parse(const uint8_t *buf, size_t len, uint32_t count,
                          struct qcow2_snapshot **out)
{
    struct qcow2_snapshot *sn;
    size_t off = 0;

    *out = NULL;
    if (!count)
        return 0;
    sn = xzalloc((size_t)count * sizeof(*sn));
    if (!sn)
        return -ENOMEM;
    for (uint32_t i = 0; i < count; i++) {
        struct qcow2_snapshot *s = &sn[i];
        uint16_t id_len, name_len;
        const uint8_t *e = buf + off;

        if (len - off < QCOW2_SN_FIXED_LEN)
            goto truncated;
        s->l1_table_offset = be64(e + QCOW2_SN_L1_OFFSET);
        s->l1_size = be32(e + QCOW2_SN_L1_SIZE);
        id_len = be16(e + QCOW2_SN_ID_SIZE);
        name_len = be16(e + QCOW2_SN_NAME_SIZE);
        s->date_sec = be32(e + QCOW2_SN_DATE_SEC);
        s->date_nsec = be32(e + QCOW2_SN_DATE_NSEC);
        s->vm_clock_nsec = be64(e + QCOW2_SN_VM_CLOCK);
        s->vm_state_size = be32(e + QCOW2_SN_VM_STATE_SIZE);
        s->extra_size = be32(e + QCOW2_SN_EXTRA_SIZE);
        off += QCOW2_SN_FIXED_LEN;
        if (s->extra_size > QCOW2_MAX_SN_EXTRA) {
            qcow2_snapshots_free(sn, count);
            return err_set(-EFBIG, "Too much extra metadata in snapshot table entry %u", i);
        }
        if (len - off < (size_t)s->extra_size + id_len + name_len)
            goto truncated;
        if (s->extra_size) {
            s->extra = malloc(s->extra_size);
            if (!s->extra)
                goto nomem;
            memcpy(s->extra, buf + off, s->extra_size);
            if (s->extra_size >= 8)
                s->vm_state_size = be64(s->extra);
            if (s->extra_size >= 16) {
                s->disk_size = be64(s->extra + 8);
                s->has_disk_size = true;
            }
            if (s->extra_size >= 24) {
                s->icount = be64(s->extra + 16);
                s->has_icount = s->icount != UINT64_MAX;
            }
        }
        off += s->extra_size;
        s->id = malloc((size_t)id_len + 1);
        s->name = malloc((size_t)name_len + 1);
        if (!s->id || !s->name)
            goto nomem;
        memcpy(s->id, buf + off, id_len);
        s->id[id_len] = 0;
        off += id_len;
        memcpy(s->name, buf + off, name_len);
        s->name[name_len] = 0;
        off += name_len;
        off = (size_t)ALIGN_UP((uint64_t)off, 8);
        if (off > len && i + 1 < count)
            goto truncated;
        if (off > len)
            off = len;
    }
    *out = sn;
    return 0;

truncated:
    qcow2_snapshots_free(sn, count);
    return err_set(-EINVAL, "Snapshot table is truncated");
nomem:
    qcow2_snapshots_free(sn, count);
    return -ENOMEM;
}

static uint32_t extra_len(const struct qcow2_snapshot *s)
{
    /* Always at least the v3 fields; keep whatever else the entry had. */
    uint32_t n = s->extra_size;
    if (n < QCOW2_SN_EXTRA_V3_LEN)
        n = QCOW2_SN_EXTRA_V3_LEN;
    if (s->has_icount && n < QCOW2_SN_EXTRA_ICOUNT_LEN)
        n = QCOW2_SN_EXTRA_ICOUNT_LEN;
    return n;
}

uint64_t qcow2_snapshots_size(const struct qcow2_snapshot *sn, uint32_t count)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < count; i++)
        n += ALIGN_UP(QCOW2_SN_FIXED_LEN + (uint64_t)extra_len(&sn[i]) +
                      strlen(sn[i].id) + strlen(sn[i].name), 8);
    return n;
}

void qcow2_snapshots_build(const struct qcow2_snapshot *sn, uint32_t count, uint8_t *buf)
{
    size_t off = 0;

    for (uint32_t i = 0; i < count; i++) {
        const struct qcow2_snapshot *s = &sn[i];
        uint32_t elen = extra_len(s);
        size_t id_len = strlen(s->id), name_len = strlen(s->name);
        uint8_t *e = buf + off;
        size_t total = (size_t)ALIGN_UP(QCOW2_SN_FIXED_LEN + (uint64_t)elen + id_len + name_len, 8);

        memset(e, 0, total);
        put_be64(e + QCOW2_SN_L1_OFFSET, s->l1_table_offset);
        put_be32(e + QCOW2_SN_L1_SIZE, s->l1_size);
        put_be16(e + QCOW2_SN_ID_SIZE, (uint16_t)id_len);
        put_be16(e + QCOW2_SN_NAME_SIZE, (uint16_t)name_len);
        put_be32(e + QCOW2_SN_DATE_SEC, s->date_sec);
        put_be32(e + QCOW2_SN_DATE_NSEC, s->date_nsec);
        put_be64(e + QCOW2_SN_VM_CLOCK, s->vm_clock_nsec);
        put_be32(e + QCOW2_SN_VM_STATE_SIZE,
                 s->vm_state_size > UINT32_MAX ? 0 : (uint32_t)s->vm_state_size);
        put_be32(e + QCOW2_SN_EXTRA_SIZE, elen);
        e += QCOW2_SN_FIXED_LEN;
        if (s->extra_size)
            memcpy(e, s->extra, s->extra_size);
        put_be64(e, s->vm_state_size);
        put_be64(e + 8, s->disk_size);
        if (elen >= QCOW2_SN_EXTRA_ICOUNT_LEN)
            put_be64(e + 16, s->has_icount ? s->icount : UINT64_MAX);
        e += elen;
        memcpy(e, s->id, id_len);
        memcpy(e + id_len, s->name, name_len);
        off += total;
    }
}

int qcow2_snapshot_find(const struct qcow2_snapshot *sn, uint32_t count,
                        const char *id, const char *name)
{
    int found = -ENOENT;

    if (id)
        for (uint32_t i = 0; i < count; i++)
            if (!strcmp(sn[i].id, id))
                return (int)i;
    if (name)
        for (uint32_t i = 0; i < count; i++)
            if (!strcmp(sn[i].name, name)) {
                if (found >= 0)
                    return err_set(-EEXIST, "More than one snapshot is named '%s' "
                                   "(ids %s and %s); use the id", name, sn[found].id, sn[i].id);
                found = (int)i;
            }
    if (found == -ENOENT)
        return err_set(-ENOENT, "Can't find the snapshot");
    return found;
}
