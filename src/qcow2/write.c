/* write.c - TEMPORARY: the write side of the data path lands with issue 3. */
#include "qcow2.h"

int qcow2_write(struct qcow2 *q, uint64_t off, const void *buf, size_t len)
{
    (void)q; (void)off; (void)buf; (void)len;
    return err_set(-ENOTSUP, "writing guest data is not implemented yet");
}

int qcow2_write_zeroes(struct qcow2 *q, uint64_t off, uint64_t len)
{
    (void)q; (void)off; (void)len;
    return err_set(-ENOTSUP, "writing guest data is not implemented yet");
}

int qcow2_write_compressed(struct qcow2 *q, uint64_t off, const void *buf, size_t len)
{
    (void)q; (void)off; (void)buf; (void)len;
    return err_set(-ENOTSUP, "writing guest data is not implemented yet");
}
