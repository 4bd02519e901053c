/*
 * header.c - the header cluster: parse and validate it from bytes, and
 * build it back. Pure functions on buffers, so they can be unit-tested and
 * fuzzed; no file I/O here.
 *
 * Validation order follows libqcow's rule: magic, then version, before any
 * other field is trusted.
 */
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

static const struct {
    uint8_t type, bit;
    const char *name;
} known_features[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};

void qcow2_meta_free(struct qcow2_meta *m)
{
    free(m->backing_file);
    free(m->backing_fmt);
    free(m->data_file);
    free(m->features);
    for (unsigned i = 0; i < m->nb_unknown; i++)
        free(m->unknown[i].data);
    free(m->unknown);
    memset(m, 0, sizeof(*m));
}

const char *qcow2_feature_name(const struct qcow2_meta *m, uint8_t type, uint8_t bit,
                               char *buf, size_t len)
{
    for (unsigned i = 0; i < m->nb_features; i++)
        if (m->features[i].type == type && m->features[i].bit == bit) {
            snprintf(buf, len, "%s", m->features[i].name);
            return buf;
        }
    for (unsigned i = 0; i < ARRAY_SIZE(known_features); i++)
        if (known_features[i].type == type && known_features[i].bit == bit) {
            snprintf(buf, len, "%s", known_features[i].name);
            return buf;
        }
    snprintf(buf, len, "Unknown %s feature: %u",
             type == 0 ? "incompatible" : type == 1 ? "compatible" : "autoclear", bit);
    return buf;
}

static char *strndup_checked(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);

    if (!s)
        return NULL;
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

/* Walk the header extensions in [start, end). */
static int parse_extensions(const uint8_t *buf, size_t start, size_t end, struct qcow2_meta *m)
{
    size_t off = start;

    while (off < end) {
        uint32_t type, len;
        const uint8_t *data;

        if (end - off < 8)
            return err_set(-EINVAL, "Header extension at offset %zu is truncated", off);
        type = be32(buf + off);
        len = be32(buf + off + 4);
        off += 8;
        if (type == QCOW2_EXT_END)
            return 0;
        if (len > end - off)
            return err_set(-EINVAL, "Header extension %#x at offset %zu too large "
                           "(%u bytes, %zu left in the header cluster)",
                           type, off - 8, len, end - off);
        data = buf + off;
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (len > 1023)
                return err_set(-EINVAL, "ERROR: ext_backing_format: len=%u too large (>=1023)", len);
            free(m->backing_fmt);
            m->backing_fmt = strndup_checked(data, strnlen((const char *)data, len));
            if (!m->backing_fmt)
                return -ENOMEM;
            break;
        case QCOW2_EXT_FEATURE_TABLE: {
            unsigned n = len / 48;
            free(m->features);
            m->features = xzalloc(n * sizeof(*m->features));
            if (!m->features)
                return -ENOMEM;
            m->nb_features = n;
            for (unsigned i = 0; i < n; i++) {
                m->features[i].type = data[i * 48];
                m->features[i].bit = data[i * 48 + 1];
                memcpy(m->features[i].name, data + i * 48 + 2, 46);
                m->features[i].name[46] = 0;
            }
            break;
        }
        case QCOW2_EXT_CRYPTO:
            if (len != 16)
                return err_set(-EINVAL, "Invalid encryption header extension length %u (expected 16)", len);
            m->has_crypto_ext = true;
            m->crypto_offset = be64(data);
            m->crypto_length = be64(data + 8);
            break;
        case QCOW2_EXT_BITMAPS:
            if (len < 24)
                return err_set(-EINVAL, "bitmaps_ext: Invalid extension length");
            m->has_bitmaps_ext = true;
            m->nb_bitmaps = be32(data);
            m->bitmap_dir_size = be64(data + 8);
            m->bitmap_dir_offset = be64(data + 16);
            break;
        case QCOW2_EXT_DATA_FILE:
            free(m->data_file);
            m->data_file = strndup_checked(data, strnlen((const char *)data, len));
            if (!m->data_file)
                return -ENOMEM;
            break;
        default: {
            struct qcow2_ext *u = realloc(m->unknown, (m->nb_unknown + 1) * sizeof(*u));
            if (!u)
                return -ENOMEM;
            m->unknown = u;
            u[m->nb_unknown].type = type;
            u[m->nb_unknown].len = len;
            u[m->nb_unknown].data = malloc(len ? len : 1);
            if (!u[m->nb_unknown].data)
                return -ENOMEM;
            memcpy(u[m->nb_unknown].data, data, len);
            m->nb_unknown++;
        }
        }
        off += ALIGN_UP((uint64_t)len, 8) < end - off ? ALIGN_UP((uint64_t)len, 8) : end - off;
    }
    return 0;
}

/*
 * qemu's wording: the feature table names the bits it knows, the rest are
 * reported together as one hexadecimal mask.
 */
static int unsupported_features(const struct qcow2_meta *m, uint64_t bits)
{
    char list[512] = "";
    size_t n = 0;

    for (unsigned i = 0; i < m->nb_features && n < sizeof(list); i++) {
        if (m->features[i].type != 0 || m->features[i].bit > 63 ||
            !(bits & (1ULL << m->features[i].bit)))
            continue;
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%.46s", n ? ", " : "",
                              m->features[i].name);
        bits &= ~(1ULL << m->features[i].bit);
    }
    if (bits && n < sizeof(list))
        snprintf(list + n, sizeof(list) - n, "%sUnknown incompatible feature: %llx",
                 n ? ", " : "", (unsigned long long)bits);
    return err_set(-ENOTSUP, "Unsupported qcow2 feature(s): %s", list);
}

int qcow2_header_parse(const uint8_t *buf, size_t len, uint64_t file_size,
                       struct qcow2_meta *m)
{
    struct qcow2_header *h = &m->h;
    uint8_t fixed[QCOW2_V3_HEADER_LEN];
    uint64_t cluster_size;
    size_t ext_end;
    int ret;

    memset(m, 0, sizeof(*m));
    if (len < 4 || be32(buf) != QCOW_MAGIC)
        return err_set(-EINVAL, "Image is not in qcow2 format");
    /* A file cut inside the fixed header reads as zeros there, as in qemu. */
    if (len < QCOW2_V3_HEADER_LEN) {
        memcpy(fixed, buf, len);
        memset(fixed + len, 0, sizeof(fixed) - len);
        buf = fixed;
    }
    h->version = be32(buf + QCOW2_HDR_VERSION);
    if (h->version < 2 || h->version > 3)
        return err_set(-ENOTSUP, "Unsupported qcow2 version %u", h->version);

    h->backing_file_offset = be64(buf + QCOW2_HDR_BACKING_OFFSET);
    h->backing_file_size = be32(buf + QCOW2_HDR_BACKING_SIZE);
    h->cluster_bits = be32(buf + QCOW2_HDR_CLUSTER_BITS);
    h->size = be64(buf + QCOW2_HDR_SIZE);
    h->crypt_method = be32(buf + QCOW2_HDR_CRYPT_METHOD);
    h->l1_size = be32(buf + QCOW2_HDR_L1_SIZE);
    h->l1_table_offset = be64(buf + QCOW2_HDR_L1_OFFSET);
    h->refcount_table_offset = be64(buf + QCOW2_HDR_REFTABLE_OFFSET);
    h->refcount_table_clusters = be32(buf + QCOW2_HDR_REFTABLE_CLUSTERS);
    h->nb_snapshots = be32(buf + QCOW2_HDR_NB_SNAPSHOTS);
    h->snapshots_offset = be64(buf + QCOW2_HDR_SNAPSHOTS_OFFSET);

    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS || h->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
        return err_set(-EINVAL, "Unsupported cluster size: 2^%u", h->cluster_bits);
    cluster_size = 1ULL << h->cluster_bits;

    if (h->version == 2) {
        h->refcount_order = 4;
        h->header_length = QCOW2_V2_HEADER_LEN;
    } else {
        h->incompatible_features = be64(buf + QCOW2_HDR_INCOMPAT);
        h->compatible_features = be64(buf + QCOW2_HDR_COMPAT);
        h->autoclear_features = be64(buf + QCOW2_HDR_AUTOCLEAR);
        h->refcount_order = be32(buf + QCOW2_HDR_REFCOUNT_ORDER);
        h->header_length = be32(buf + QCOW2_HDR_HEADER_LENGTH);
        if (h->header_length < QCOW2_V3_HEADER_MIN)
            return err_set(-EINVAL, "qcow2 header too short");
        if (h->header_length > cluster_size)
            return err_set(-EINVAL, "qcow2 header exceeds cluster size");
        if (h->header_length > len)
            return err_set(-EINVAL, "qcow2 header is longer than the file (%u bytes)",
                           h->header_length);
        if (h->header_length > QCOW2_HDR_COMPRESSION_TYPE)
            h->compression_type = buf[QCOW2_HDR_COMPRESSION_TYPE];
    }

    /* The rest of the header cluster holds extensions and the backing name. */
    if (len > cluster_size)
        len = (size_t)cluster_size;
    ext_end = len;
    if (h->backing_file_offset) {
        if (h->backing_file_offset > cluster_size || h->backing_file_offset < h->header_length)
            return err_set(-EINVAL, "Invalid backing file offset");
        if (h->backing_file_size > QCOW2_MAX_BACKING_NAME ||
            h->backing_file_size > cluster_size - h->backing_file_offset)
            return err_set(-EINVAL, "Backing file name too long");
        if (h->backing_file_offset + h->backing_file_size > len)
            return err_set(-EINVAL, "Backing file name lies past the end of the file");
        ext_end = (size_t)h->backing_file_offset;
    }
    ret = parse_extensions(buf, h->header_length, ext_end, m);
    if (ret < 0)
        return ret;

    if (h->backing_file_offset && h->backing_file_size) {
        m->backing_file = strndup_checked(buf + h->backing_file_offset, h->backing_file_size);
        if (!m->backing_file)
            return -ENOMEM;
        if (strlen(m->backing_file) != h->backing_file_size)
            return err_set(-EINVAL, "Backing file name contains a NUL byte");
    }

    if (h->incompatible_features & ~QCOW2_INCOMPAT_KNOWN)
        return unsupported_features(m, h->incompatible_features & ~QCOW2_INCOMPAT_KNOWN);
    if (h->refcount_order > 6)
        return err_set(-EINVAL, "Reference count entry width too large; may not exceed 64 bits");
    if (h->crypt_method > QCOW_CRYPT_LUKS)
        return err_set(-EINVAL, "Unsupported encryption method %u", h->crypt_method);
    if (h->compression_type > QCOW2_COMPRESSION_ZSTD)
        return err_set(-EINVAL, "qcow2: unknown compression type: %u", h->compression_type);
    if (h->compression_type != QCOW2_COMPRESSION_ZLIB &&
        !(h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION))
        return err_set(-EINVAL, "qcow2: Compression type incompatible feature bit must be set");
    if ((h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) &&
        h->compression_type == QCOW2_COMPRESSION_ZLIB)
        return err_set(-EINVAL, "Compression type incompatible feature bit must not be "
                       "set for the zlib compression type");
    if ((h->incompatible_features & QCOW2_INCOMPAT_EXTL2) && h->cluster_bits < 14)
        return err_set(-EINVAL, "Extended L2 entries need a cluster size of at least 16 KiB");
    if ((h->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) && !m->data_file)
        return err_set(-EINVAL, "Missing external data file name");
    if (h->crypt_method == QCOW_CRYPT_LUKS && !m->has_crypto_ext)
        return err_set(-EINVAL, "LUKS encryption requires the encryption header extension");

    /* Table geometry; the image layer checks the offsets against the file. */
    /* As qemu: too big when the L1 table would need more than INT_MAX entries. */
    if (h->size > INT64_MAX ||
        qcow2_l1_entries_for(h->cluster_bits, h->incompatible_features & QCOW2_INCOMPAT_EXTL2,
                             h->size) > INT32_MAX)
        return err_set(-EFBIG, "Image is too big");
    if ((uint64_t)h->l1_size * 8 > QCOW2_MAX_L1_BYTES)
        return err_set(-EFBIG, "Active L1 table too large");
    if (qcow2_l1_entries_for(h->cluster_bits,
                             h->incompatible_features & QCOW2_INCOMPAT_EXTL2, h->size) > h->l1_size)
        return err_set(-EINVAL, "L1 table is too small");
    if (h->l1_size && (h->l1_table_offset & (cluster_size - 1)))
        return err_set(-EINVAL, "Active L1 table offset invalid");
    if ((uint64_t)h->refcount_table_clusters << h->cluster_bits > QCOW2_MAX_REFTABLE_BYTES)
        return err_set(-EFBIG, "Reference count table too large");
    if (h->refcount_table_clusters == 0)
        return err_set(-EINVAL, "Image does not contain a reference count table");
    if (h->refcount_table_offset & (cluster_size - 1))
        return err_set(-EINVAL, "Reference count table offset invalid");
    /* The snapshot table's count and offset are image.c's to refuse: an
     * open for check reads on, so the checker can repair them. */
    (void)file_size;
    return 0;
}

/* Append one extension at *off; -ENOSPC when it does not fit. */
static int put_ext(uint8_t *buf, size_t len, size_t *off, uint32_t type,
                   const void *data, uint32_t dlen)
{
    size_t need = 8 + ALIGN_UP((uint64_t)dlen, 8);

    if (*off + need > len)
        return -ENOSPC;
    put_be32(buf + *off, type);
    put_be32(buf + *off + 4, dlen);
    memcpy(buf + *off + 8, data, dlen);
    memset(buf + *off + 8 + dlen, 0, need - 8 - dlen);
    *off += need;
    return 0;
}

static int build(const struct qcow2_meta *m, uint8_t *buf, size_t len, bool feature_table)
{
    const struct qcow2_header *h = &m->h;
    size_t off, blen = m->backing_file ? strlen(m->backing_file) : 0;
    int ret;

    if (len < QCOW2_V3_HEADER_LEN)
        return -ENOSPC;
    memset(buf, 0, len);
    put_be32(buf + QCOW2_HDR_MAGIC, QCOW_MAGIC);
    put_be32(buf + QCOW2_HDR_VERSION, h->version);
    put_be32(buf + QCOW2_HDR_CLUSTER_BITS, h->cluster_bits);
    put_be64(buf + QCOW2_HDR_SIZE, h->size);
    put_be32(buf + QCOW2_HDR_CRYPT_METHOD, h->crypt_method);
    put_be32(buf + QCOW2_HDR_L1_SIZE, h->l1_size);
    put_be64(buf + QCOW2_HDR_L1_OFFSET, h->l1_table_offset);
    put_be64(buf + QCOW2_HDR_REFTABLE_OFFSET, h->refcount_table_offset);
    put_be32(buf + QCOW2_HDR_REFTABLE_CLUSTERS, h->refcount_table_clusters);
    put_be32(buf + QCOW2_HDR_NB_SNAPSHOTS, h->nb_snapshots);
    put_be64(buf + QCOW2_HDR_SNAPSHOTS_OFFSET, h->snapshots_offset);
    if (h->version >= 3) {
        put_be64(buf + QCOW2_HDR_INCOMPAT, h->incompatible_features);
        put_be64(buf + QCOW2_HDR_COMPAT, h->compatible_features);
        put_be64(buf + QCOW2_HDR_AUTOCLEAR, h->autoclear_features);
        put_be32(buf + QCOW2_HDR_REFCOUNT_ORDER, h->refcount_order);
        put_be32(buf + QCOW2_HDR_HEADER_LENGTH, QCOW2_V3_HEADER_LEN);
        buf[QCOW2_HDR_COMPRESSION_TYPE] = h->compression_type;
        off = QCOW2_V3_HEADER_LEN;
    } else {
        off = QCOW2_V2_HEADER_LEN;
    }

    /* Extensions in the order qemu writes them. */
    if (m->backing_fmt) {
        ret = put_ext(buf, len, &off, QCOW2_EXT_BACKING_FORMAT, m->backing_fmt,
                      (uint32_t)strlen(m->backing_fmt));
        if (ret < 0)
            return ret;
    }
    if (m->data_file) {
        ret = put_ext(buf, len, &off, QCOW2_EXT_DATA_FILE, m->data_file,
                      (uint32_t)strlen(m->data_file));
        if (ret < 0)
            return ret;
    }
    if (m->has_crypto_ext) {
        uint8_t c[16];
        put_be64(c, m->crypto_offset);
        put_be64(c + 8, m->crypto_length);
        ret = put_ext(buf, len, &off, QCOW2_EXT_CRYPTO, c, 16);
        if (ret < 0)
            return ret;
    }
    /* qemu leaves the table out for clusters of 4 KiB and less (room for
     * the backing file name), and whenever it does not fit. */
    if (h->version >= 3 && feature_table && h->cluster_bits > 12) {
        uint8_t t[ARRAY_SIZE(known_features) * 48];
        memset(t, 0, sizeof(t));
        for (unsigned i = 0; i < ARRAY_SIZE(known_features); i++) {
            t[i * 48] = known_features[i].type;
            t[i * 48 + 1] = known_features[i].bit;
            memcpy(t + i * 48 + 2, known_features[i].name, strlen(known_features[i].name));
        }
        ret = put_ext(buf, len, &off, QCOW2_EXT_FEATURE_TABLE, t, sizeof(t));
        if (ret < 0)
            return ret;
    }
    if (m->has_bitmaps_ext) {
        uint8_t b[24] = { 0 };
        put_be32(b, m->nb_bitmaps);
        put_be64(b + 8, m->bitmap_dir_size);
        put_be64(b + 16, m->bitmap_dir_offset);
        ret = put_ext(buf, len, &off, QCOW2_EXT_BITMAPS, b, 24);
        if (ret < 0)
            return ret;
    }
    for (unsigned i = 0; i < m->nb_unknown; i++) {
        ret = put_ext(buf, len, &off, m->unknown[i].type, m->unknown[i].data, m->unknown[i].len);
        if (ret < 0)
            return ret;
    }
    if (off + 8 > len)
        return -ENOSPC;
    memset(buf + off, 0, 8);    /* end of extensions */
    off += 8;

    if (blen) {
        if (blen > QCOW2_MAX_BACKING_NAME || off + blen > len)
            return -ENOSPC;
        memcpy(buf + off, m->backing_file, blen);
        put_be64(buf + QCOW2_HDR_BACKING_OFFSET, off);
        put_be32(buf + QCOW2_HDR_BACKING_SIZE, (uint32_t)blen);
        off += blen;
    }
    return (int)off;
}

int qcow2_header_build(const struct qcow2_meta *m, uint8_t *buf, size_t len)
{
    int ret = build(m, buf, len, true);

    /* The feature table is optional: like qemu, leave it out when a small
     * cluster has no room for it next to the extensions and backing name. */
    if (ret == -ENOSPC && m->h.version >= 3)
        ret = build(m, buf, len, false);
    return ret;
}
