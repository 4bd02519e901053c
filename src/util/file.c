/*
 * file.c - whole-buffer I/O on image files, with the advisory image lock
 * and the crash-test hook (QIMG_DEBUG_KILL_AFTER_WRITES=N sends SIGKILL to
 * ourselves after the Nth write, so tests can stop qimg at any point).
 *
 * Owns: file descriptors. Must not: know anything about image formats.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static long debug_writes_left = -1;

static void debug_write_hook(void)
{
    static bool init;

    if (!init) {
        const char *s = getenv("QIMG_DEBUG_KILL_AFTER_WRITES");
        init = true;
        if (s && *s)
            debug_writes_left = atol(s);
    }
    if (debug_writes_left < 0)
        return;
    if (debug_writes_left-- == 0)
        raise(SIGKILL);
}

/*
 * Image locking compatible with qemu's: open file description locks on
 * single bytes. Byte 100 + p means "I use permission p", byte 200 + p "I do
 * not let others have p" (p: 0 consistent read, 1 write, 3 resize). So a
 * running VM keeps qimg from writing an image, and qimg keeps the VM out.
 */
enum { LOCK_PERM = 100, LOCK_SHARED = 200, PERM_READ = 0, PERM_WRITE = 1, PERM_RESIZE = 3 };

static int lock_byte(int fd, int cmd, short type, off_t byte, short *held)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };

    if (fcntl(fd, cmd, &fl) < 0)
        return -errno;
    if (held)
        *held = fl.l_type;
    return 0;
}

static bool held_by_other(int fd, off_t byte)
{
    short t = F_UNLCK;

    return lock_byte(fd, F_OFD_GETLK, F_WRLCK, byte, &t) == 0 && t != F_UNLCK;
}

static int take_image_lock(int fd, const char *name, bool write)
{
    static const int mine_rw[] = { LOCK_PERM + PERM_READ, LOCK_PERM + PERM_WRITE,
                                   LOCK_PERM + PERM_RESIZE, LOCK_SHARED + PERM_WRITE,
                                   LOCK_SHARED + PERM_RESIZE };
    static const int mine_ro[] = { LOCK_PERM + PERM_READ, LOCK_SHARED + PERM_WRITE,
                                   LOCK_SHARED + PERM_RESIZE };
    const int *mine = write ? mine_rw : mine_ro;
    size_t n = write ? ARRAY_SIZE(mine_rw) : ARRAY_SIZE(mine_ro);

    if (held_by_other(fd, LOCK_PERM + PERM_WRITE) ||
        (write && held_by_other(fd, LOCK_SHARED + PERM_WRITE)))
        return err_set(-EAGAIN, "Failed to get %s\"write\" lock\n"
                       "Is another process using the image [%s]?",
                       write ? "" : "shared ", name);
    for (size_t i = 0; i < n; i++) {
        int ret = lock_byte(fd, F_OFD_SETLK, F_RDLCK, mine[i], NULL);
        if (ret == -EINVAL || ret == -ENOLCK || ret == -EOPNOTSUPP)
            return 0;       /* a file system without locks: go on unlocked */
        if (ret < 0)
            return err_set(-EAGAIN, "Failed to lock byte %d\n"
                           "Is another process using the image [%s]?", mine[i], name);
    }
    return 0;
}

int qfile_open(struct qfile **out, const char *name, int flags)
{
    int oflags = (flags & QF_RDWR) ? O_RDWR : O_RDONLY;
    struct qfile *f;
    struct stat st;
    int fd;

    if (flags & QF_CREATE)
        oflags |= O_CREAT;
    if (flags & QF_TRUNC)
        oflags |= O_TRUNC;
    if (flags & QF_EXCL)
        oflags |= O_EXCL;
    fd = open(name, oflags | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
        int e = S_ISDIR(st.st_mode) ? EISDIR : errno;
        close(fd);
        return -e;
    }
    if (!(flags & QF_NOLOCK)) {
        int ret = take_image_lock(fd, name, flags & QF_RDWR);
        if (ret < 0) {
            close(fd);
            return ret;
        }
    }
    f = xzalloc(sizeof(*f));
    if (!f) {
        close(fd);
        return -ENOMEM;
    }
    f->fd = fd;
    f->name = strdup(name);
    f->writable = flags & QF_RDWR;
    f->unsafe = flags & QF_UNSAFE;
    *out = f;
    return 0;
}

int qfile_close(struct qfile *f)
{
    int ret = 0;

    if (!f)
        return 0;
    if (f->writable && !f->unsafe && fdatasync(f->fd) < 0 && errno != EINVAL)
        ret = -errno;
    if (close(f->fd) < 0 && !ret)
        ret = -errno;
    free(f->name);
    free(f);
    return ret;
}

static int do_pread(struct qfile *f, void *buf, size_t len, uint64_t off, size_t *done)
{
    size_t n = 0;

    while (n < len) {
        ssize_t r = pread(f->fd, (char *)buf + n, len - n, (off_t)(off + n));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *done = n;
    return 0;
}

int qfile_pread(struct qfile *f, void *buf, size_t len, uint64_t off)
{
    size_t done;
    int ret;

    if (off > INT64_MAX || len > INT64_MAX - off)
        return err_set(-EINVAL, "read at offset %#llx out of range",
                       (unsigned long long)off);
    ret = do_pread(f, buf, len, off, &done);
    if (ret < 0)
        return ret;
    if (done < len)
        return err_set(-EIO, "unexpected end of file reading %zu bytes at offset %#llx",
                       len, (unsigned long long)off);
    return 0;
}

int qfile_pread_pad(struct qfile *f, void *buf, size_t len, uint64_t off)
{
    size_t done;
    int ret;

    if (off > INT64_MAX || len > INT64_MAX - off)
        return err_set(-EINVAL, "read at offset %#llx out of range",
                       (unsigned long long)off);
    ret = do_pread(f, buf, len, off, &done);
    if (ret < 0)
        return ret;
    memset((char *)buf + done, 0, len - done);
    return 0;
}

int qfile_pwrite(struct qfile *f, const void *buf, size_t len, uint64_t off)
{
    size_t n = 0;

    if (!f->writable)
        return -EBADF;
    if (off > INT64_MAX || len > INT64_MAX - off)
        return err_set(-EFBIG, "write at offset %#llx out of range",
                       (unsigned long long)off);
    debug_write_hook();
    while (n < len) {
        ssize_t r = pwrite(f->fd, (const char *)buf + n, len - n, (off_t)(off + n));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        n += (size_t)r;
    }
    return 0;
}

int qfile_size(struct qfile *f, uint64_t *size)
{
    struct stat st;

    if (fstat(f->fd, &st) < 0)
        return -errno;
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(f->fd, 0, SEEK_END);
        if (end < 0)
            return -errno;
        *size = (uint64_t)end;
        return 0;
    }
    *size = (uint64_t)st.st_size;
    return 0;
}

int qfile_truncate(struct qfile *f, uint64_t size)
{
    if (!f->writable)
        return -EBADF;
    debug_write_hook();
    if (ftruncate(f->fd, (off_t)size) < 0)
        return -errno;
    return 0;
}

int qfile_flush(struct qfile *f)
{
    if (!f->writable || f->unsafe)
        return 0;
    if (fdatasync(f->fd) < 0 && errno != EINVAL)
        return -errno;
    return 0;
}

int qfile_discard(struct qfile *f, uint64_t off, uint64_t len)
{
    if (!f->writable)
        return -EBADF;
    if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
        return errno == EOPNOTSUPP ? -ENOTSUP : -errno;
    return 0;
}

int qfile_allocate(struct qfile *f, uint64_t off, uint64_t len)
{
    int r;

    if (!f->writable)
        return -EBADF;
    r = posix_fallocate(f->fd, (off_t)off, (off_t)len);
    return r ? -r : 0;
}

int qfile_actual_size(struct qfile *f, uint64_t *size)
{
    struct stat st;

    if (fstat(f->fd, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_blocks * 512;
    return 0;
}

int qfile_extent(struct qfile *f, uint64_t off, uint64_t len, bool *data, uint64_t *pnum)
{
    off_t d = lseek(f->fd, (off_t)off, SEEK_DATA);

    if (d < 0) {
        if (errno == ENXIO) {           /* only a hole up to the end */
            *data = false;
            *pnum = len;
            return 0;
        }
        *data = true;                   /* no SEEK_DATA: say data */
        *pnum = len;
        return 0;
    }
    if ((uint64_t)d > off) {
        *data = false;
        *pnum = MIN(len, (uint64_t)d - off);
        return 0;
    }
    {
        off_t h = lseek(f->fd, (off_t)off, SEEK_HOLE);
        *data = true;
        *pnum = (h < 0 || (uint64_t)h <= off) ? len : MIN(len, (uint64_t)h - off);
    }
    return 0;
}
