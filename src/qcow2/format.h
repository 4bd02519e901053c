/*
 * format.h - the qcow2 on-disk layout: field offsets, flag values, limits,
 * and the big-endian helpers that decode and encode them.
 *
 * Owns: constants taken from QEMU's docs/interop/qcow2.txt.
 * Must not: hold any state or do any I/O.
 */
#ifndef QIMG_QCOW2_FORMAT_H
#define QIMG_QCOW2_FORMAT_H

#include <stdint.h>
#include <string.h>

#define QCOW_MAGIC              0x514649fbu     /* "QFI\xfb" */

/* Header field offsets (version 2 header is 72 bytes, version 3 at least 104). */
#define QCOW2_HDR_MAGIC                 0
#define QCOW2_HDR_VERSION               4
#define QCOW2_HDR_BACKING_OFFSET        8
#define QCOW2_HDR_BACKING_SIZE          16
#define QCOW2_HDR_CLUSTER_BITS          20
#define QCOW2_HDR_SIZE                  24
#define QCOW2_HDR_CRYPT_METHOD          32
#define QCOW2_HDR_L1_SIZE               36
#define QCOW2_HDR_L1_OFFSET             40
#define QCOW2_HDR_REFTABLE_OFFSET       48
#define QCOW2_HDR_REFTABLE_CLUSTERS     56
#define QCOW2_HDR_NB_SNAPSHOTS          60
#define QCOW2_HDR_SNAPSHOTS_OFFSET      64
#define QCOW2_HDR_INCOMPAT              72
#define QCOW2_HDR_COMPAT                80
#define QCOW2_HDR_AUTOCLEAR             88
#define QCOW2_HDR_REFCOUNT_ORDER        96
#define QCOW2_HDR_HEADER_LENGTH         100
#define QCOW2_HDR_COMPRESSION_TYPE      104

#define QCOW2_V2_HEADER_LEN     72
#define QCOW2_V3_HEADER_MIN     104
#define QCOW2_V3_HEADER_LEN     112     /* what qemu 7.2 writes */

/* Incompatible feature bits. */
#define QCOW2_INCOMPAT_DIRTY            (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT          (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE        (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION      (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2            (1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN            0x1fULL

/* Compatible feature bits. */
#define QCOW2_COMPAT_LAZY_REFCOUNTS     (1ULL << 0)

/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_BITMAPS         (1ULL << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW   (1ULL << 1)
#define QCOW2_AUTOCLEAR_KNOWN           0x3ULL

/* crypt_method */
#define QCOW_CRYPT_NONE 0
#define QCOW_CRYPT_AES  1
#define QCOW_CRYPT_LUKS 2

/* compression_type */
#define QCOW2_COMPRESSION_ZLIB  0
#define QCOW2_COMPRESSION_ZSTD  1

/* Header extension types. */
#define QCOW2_EXT_END                   0x00000000u
#define QCOW2_EXT_BACKING_FORMAT        0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE         0x6803f857u
#define QCOW2_EXT_BITMAPS               0x23852875u
#define QCOW2_EXT_CRYPTO                0x0537be77u
#define QCOW2_EXT_DATA_FILE             0x44415441u

/* L1/L2/refcount table entries. */
#define QCOW_OFLAG_COPIED       (1ULL << 63)
#define QCOW_OFLAG_COMPRESSED   (1ULL << 62)
#define QCOW_OFLAG_ZERO         (1ULL << 0)
#define L1E_OFFSET_MASK         0x00fffffffffffe00ULL
#define L2E_OFFSET_MASK         0x00fffffffffffe00ULL
#define L1E_RESERVED_MASK       0x7f000000000001ffULL
#define L2E_STD_RESERVED_MASK   0x3f000000000001feULL
#define REFT_OFFSET_MASK        0xfffffffffffffe00ULL
#define REFT_RESERVED_MASK      0x1ffULL

/* Compressed descriptor: the host offset takes 62 - (cluster_bits - 8) bits. */
static inline unsigned qcow2_csize_shift(unsigned cluster_bits)
{
    return 62 - (cluster_bits - 8);
}

/* Snapshot table entry, fixed part. */
#define QCOW2_SN_L1_OFFSET      0
#define QCOW2_SN_L1_SIZE        8
#define QCOW2_SN_ID_SIZE        12
#define QCOW2_SN_NAME_SIZE      14
#define QCOW2_SN_DATE_SEC       16
#define QCOW2_SN_DATE_NSEC      20
#define QCOW2_SN_VM_CLOCK       24
#define QCOW2_SN_VM_STATE_SIZE  32
#define QCOW2_SN_EXTRA_SIZE     36
#define QCOW2_SN_FIXED_LEN      40
#define QCOW2_SN_EXTRA_V3_LEN   16   /* vm_state_size_large, disk_size */
#define QCOW2_SN_EXTRA_ICOUNT_LEN 24 /* ... and icount */

/* Limits (as QEMU enforces them). */
#define QCOW2_MIN_CLUSTER_BITS  9
#define QCOW2_MAX_CLUSTER_BITS  21
#define QCOW2_MAX_L1_BYTES      (32u * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES (8u * 1024 * 1024)
#define QCOW2_MAX_SNAPSHOTS     65536
#define QCOW2_MAX_SN_EXTRA      1024
#define QCOW2_MAX_SN_TABLE_BYTES (64u * 1024 * 1024)
#define QCOW2_MAX_BACKING_NAME  1023
#define QCOW2_MAX_ID_LEN        127   /* our own bound for id strings */
#define QCOW2_MAX_NAME_LEN      1023  /* and for snapshot names */
#define QCOW2_MAX_HOST_OFFSET   (1ULL << 56)  /* 56 bits of host offset */

/* Big-endian helpers. */
static inline uint16_t be16(const void *p)
{
    const uint8_t *b = p;
    return (uint16_t)(b[0] << 8 | b[1]);
}
static inline uint32_t be32(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}
static inline uint64_t be64(const void *p)
{
    const uint8_t *b = p;
    return (uint64_t)be32(b) << 32 | be32(b + 4);
}
static inline void put_be16(void *p, uint16_t v)
{
    uint8_t *b = p;
    b[0] = v >> 8; b[1] = (uint8_t)v;
}
static inline void put_be32(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = v >> 24; b[1] = (uint8_t)(v >> 16); b[2] = (uint8_t)(v >> 8); b[3] = (uint8_t)v;
}
static inline void put_be64(void *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32((uint8_t *)p + 4, (uint32_t)v);
}

#endif
