// CDirectIO: the C shim under DirectIO.
//
// It holds only what Swift cannot express itself:
//  - the io_uring and statx system calls (glibc has no wrappers, and the variadic syscall()
//    cannot be called from Swift);
//  - mirrors of the kernel structs DirectIO shares with the kernel, flattened so that Swift can
//    fill every field (the kernel's anonymous unions import poorly), each checked by size and,
//    where the installed header has the struct, against it;
//  - constants that older kernel headers (Debian 12 ships 6.1) lack, guarded by #ifndef, and
//    macros Swift cannot import (O_DIRECT needs _GNU_SOURCE, ioctl numbers, MAP_FAILED);
//  - acquire/release accessors for the ring indices shared with the kernel.
// Every symbol carries the dio_ / DIO_ prefix.
#ifndef CDIRECTIO_H
#define CDIRECTIO_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <sys/resource.h>
#include <linux/fs.h>
#include <linux/io_uring.h>
#include <linux/stat.h>

// MARK: - System call numbers (x86_64 and aarch64 agree; both are in every libc since 5.1 headers)
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

// MARK: - io_uring constants newer than the oldest supported headers (values from
// include/uapi/linux/io_uring.h of Linux 6.18).
#ifndef IORING_SETUP_CQSIZE
#define IORING_SETUP_CQSIZE (1U << 3)
#endif
#ifndef IORING_SETUP_CLAMP
#define IORING_SETUP_CLAMP (1U << 4)
#endif
#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16)
#endif
#ifndef IORING_ENTER_REGISTERED_RING
#define IORING_ENTER_REGISTERED_RING (1U << 4)
#endif
#ifndef IORING_FEAT_SINGLE_MMAP
#define IORING_FEAT_SINGLE_MMAP (1U << 0)
#endif
#ifndef IORING_FEAT_NODROP
#define IORING_FEAT_NODROP (1U << 1)
#endif
#ifndef IORING_FEAT_EXT_ARG
#define IORING_FEAT_EXT_ARG (1U << 8)
#endif
#ifndef IORING_ENTER_GETEVENTS
#define IORING_ENTER_GETEVENTS (1U << 0)
#endif
#ifndef IORING_SQ_CQ_OVERFLOW
#define IORING_SQ_CQ_OVERFLOW (1U << 1)
#endif
#ifndef IORING_SQ_TASKRUN
#define IORING_SQ_TASKRUN (1U << 2)
#endif
#ifndef IORING_FSYNC_DATASYNC
#define IORING_FSYNC_DATASYNC (1U << 0)
#endif
#ifndef IORING_RSRC_REGISTER_SPARSE
#define IORING_RSRC_REGISTER_SPARSE (1U << 0)
#endif
#ifndef IO_URING_OP_SUPPORTED
#define IO_URING_OP_SUPPORTED (1U << 0)
#endif
#ifndef IORING_ASYNC_CANCEL_ALL
#define IORING_ASYNC_CANCEL_ALL (1U << 0)
#endif

// SEND_ZC (Linux 6.0): flags in sqe.ioprio, and the CQE flags of its two completions.
static const uint16_t DIO_IORING_RECVSEND_FIXED_BUF = 1U << 2;
static const uint16_t DIO_IORING_SEND_ZC_REPORT_USAGE = 1U << 3;
static const uint32_t DIO_IORING_CQE_F_MORE = 1U << 1;
static const uint32_t DIO_IORING_CQE_F_NOTIF = 1U << 3;
static const uint32_t DIO_IORING_NOTIF_USAGE_ZC_COPIED = 1U << 31;

// IOSQE_FIXED_FILE is built from an enum constant (IOSQE_FIXED_FILE_BIT) and does not import.
static const uint8_t DIO_IOSQE_FIXED_FILE = 1U << 0;

// Offsets for mmap of the rings (stable since 5.1).
static const uint64_t DIO_IORING_OFF_SQ_RING = 0ULL;
static const uint64_t DIO_IORING_OFF_CQ_RING = 0x8000000ULL;
static const uint64_t DIO_IORING_OFF_SQES = 0x10000000ULL;

// MARK: - statx constants newer than the oldest supported headers (include/uapi/linux/stat.h).
#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U /* Linux 6.1 */
#endif
#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif
#ifndef STATX_MNT_ID_UNIQUE
#define STATX_MNT_ID_UNIQUE 0x00004000U /* Linux 6.8: a mount ID never reused */
#endif
#ifndef STATX_DIO_READ_ALIGN
#define STATX_DIO_READ_ALIGN 0x00020000U /* Linux 6.14 */
#endif
#ifndef STATX_WRITE_ATOMIC
#define STATX_WRITE_ATOMIC 0x00010000U /* Linux 6.11 */
#endif
// RWF_ATOMIC (include/uapi/linux/fs.h, Linux 6.11): the write lands whole or not at all.
static const int DIO_RWF_ATOMIC = 0x00000040;
// RWF_DSYNC: the write is durable when it completes (FUA where the device has it).
static const int DIO_RWF_DSYNC = 0x00000002;
#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif
#ifndef AT_STATX_SYNC_AS_STAT
#define AT_STATX_SYNC_AS_STAT 0x0000
#endif

// MARK: - Macros Swift cannot import (they need _GNU_SOURCE or are built from _IO* macros).
static const int DIO_O_DIRECT = 040000;      // asm-generic/fcntl.h; x86_64 and aarch64 agree
static const int DIO_O_TMPFILE = 020200000;  // __O_TMPFILE | O_DIRECTORY
static const int DIO_FALLOC_FL_KEEP_SIZE = 0x01;
static const int DIO_FALLOC_FL_PUNCH_HOLE = 0x02;
static const int DIO_MAP_HUGETLB = 0x40000;
static const int DIO_MADV_DONTFORK = 10;
static const int DIO_MADV_HUGEPAGE = 14;
static const unsigned long DIO_BLKSSZGET = BLKSSZGET;
static const unsigned long DIO_BLKPBSZGET = BLKPBSZGET;
static const unsigned long DIO_BLKGETSIZE64 = BLKGETSIZE64;

static const int DIO_RLIMIT_MEMLOCK = RLIMIT_MEMLOCK;
// Transfers: lseek whences, pipe sizing and reflink ioctls (include/uapi/linux/fs.h, fcntl.h).
static const int DIO_SEEK_DATA = 3;
static const int DIO_SEEK_HOLE = 4;
static const int DIO_F_SETPIPE_SZ = 1031;
static const int DIO_F_GETPIPE_SZ = 1032;
static const int DIO_MSG_NOSIGNAL = 0x4000;
static const int DIO_AT_SYMLINK_FOLLOW = 0x400;
static const unsigned long DIO_FICLONE = 0x40049409UL;       // _IOW(0x94, 9, int)
static const unsigned long DIO_FICLONERANGE = 0x4020940dUL;  // _IOW(0x94, 13, struct file_clone_range)

struct dio_file_clone_range {
    int64_t src_fd;
    uint64_t src_offset;
    uint64_t src_length;
    uint64_t dest_offset;
};


/// Tells ThreadSanitizer that whatever was released on `address` happens before this point
/// (see shim.c; a no-op without ThreadSanitizer).
void dio_tsan_acquire(const void *address);

// MARK: - Swift's global executor (global_executor.c)

/// Takes a job of Swift's global executor; false to leave it to the default executor.
typedef bool (*dio_enqueue_job_fn)(void *context, void *job);
/// Takes a job to run after `nanoseconds`; false to leave it to the default executor.
typedef bool (*dio_enqueue_delayed_job_fn)(void *context, unsigned long long nanoseconds, void *job);
/// Installs the concurrency runtime's global enqueue hooks, which call `enqueue` and
/// `enqueueDelayed` with `context`: 0, or -1 when the runtime lacks them, -2 when another
/// library has installed its own.
int dio_install_global_executor_hooks(void *context, dio_enqueue_job_fn enqueue, dio_enqueue_delayed_job_fn enqueueDelayed);
/// The executor of the ring whose thread is calling (NULL on other threads).
void *dio_current_ring_executor(void);
void dio_set_current_ring_executor(void *executor);
/// Whether the calling thread is the process's first, the one `main` runs on.
static inline bool dio_is_main_thread(void) { return syscall(SYS_gettid) == getpid(); }

static inline void *dio_map_failed(void) { return MAP_FAILED; }
static inline int dio_errno(void) { return errno; }
static inline void dio_set_errno(int value) { errno = value; }

// MARK: - Mirrored kernel structs

// struct io_uring_sqe, flattened: the kernel's unions are named here by the member DirectIO
// uses for each opcode (addr2 = off, op_flags = rw_flags/fsync_flags/cancel_flags, ...).
struct dio_sqe {
    uint8_t opcode;
    uint8_t flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off;        // union { off, addr2 }
    uint64_t addr;       // union { addr, splice_off_in }
    uint32_t len;
    uint32_t op_flags;   // union { rw_flags, fsync_flags, cancel_flags, ... }
    uint64_t user_data;
    uint16_t buf_index;  // union { buf_index, buf_group }
    uint16_t personality;
    int32_t file_index;  // union { splice_fd_in, file_index, addr_len }
    uint64_t addr3;
    uint64_t pad2;
};

// struct io_uring_cqe (without the CQE32 extension, which DirectIO does not request).
struct dio_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};

struct dio_sqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
};

struct dio_cqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
};

struct dio_uring_params {
    uint32_t sq_entries;
    uint32_t cq_entries;
    uint32_t flags;
    uint32_t sq_thread_cpu;
    uint32_t sq_thread_idle;
    uint32_t features;
    uint32_t wq_fd;
    uint32_t resv[3];
    struct dio_sqring_offsets sq_off;
    struct dio_cqring_offsets cq_off;
};

struct dio_probe_op {
    uint8_t op;
    uint8_t resv;
    uint16_t flags;
    uint32_t resv2;
};

// struct io_uring_probe with room for every opcode the kernel may report (ops_len <= 256).
struct dio_probe {
    uint8_t last_op;
    uint8_t ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    struct dio_probe_op ops[256];
};

struct dio_rsrc_register {
    uint32_t nr;
    uint32_t flags;
    uint64_t resv2;
    uint64_t data;
    uint64_t tags;
};

struct dio_rsrc_update2 {
    uint32_t offset;
    uint32_t resv;
    uint64_t data;
    uint64_t tags;
    uint32_t nr;
    uint32_t resv2;
};

/// struct io_uring_clone_buffers (IORING_REGISTER_CLONE_BUFFERS, 6.12+; DST_REPLACE and the
/// offsets 6.13+).
struct dio_clone_buffers {
    uint32_t src_fd;
    uint32_t flags;
    uint32_t src_off;
    uint32_t dst_off;
    uint32_t nr;
    uint32_t pad[3];
};
/// Replace the destination's slots rather than require an empty table (IORING_REGISTER_DST_REPLACE).
static const uint32_t DIO_IORING_REGISTER_DST_REPLACE = 1U << 1;

struct dio_statx_timestamp {
    int64_t tv_sec;
    uint32_t tv_nsec;
    int32_t reserved;
};

// struct statx as of Linux 6.16; older kernels leave the newer fields zero and clear their
// mask bits, which is how DirectIO tells "absent" from "zero".
struct dio_statx {
    uint32_t stx_mask;
    uint32_t stx_blksize;
    uint64_t stx_attributes;
    uint32_t stx_nlink;
    uint32_t stx_uid;
    uint32_t stx_gid;
    uint16_t stx_mode;
    uint16_t spare0;
    uint64_t stx_ino;
    uint64_t stx_size;
    uint64_t stx_blocks;
    uint64_t stx_attributes_mask;
    struct dio_statx_timestamp stx_atime, stx_btime, stx_ctime, stx_mtime;
    uint32_t stx_rdev_major;
    uint32_t stx_rdev_minor;
    uint32_t stx_dev_major;
    uint32_t stx_dev_minor;
    uint64_t stx_mnt_id;
    uint32_t stx_dio_mem_align;
    uint32_t stx_dio_offset_align;
    uint64_t stx_subvol;
    uint32_t stx_atomic_write_unit_min;
    uint32_t stx_atomic_write_unit_max;
    uint32_t stx_atomic_write_segments_max;
    uint32_t stx_dio_read_offset_align;
    uint32_t stx_atomic_write_unit_max_opt;
    uint32_t spare2;
    uint64_t spare3[8];
};

// MARK: - System calls. Each returns the raw result: -1 with errno set on failure.

static inline int dio_io_uring_setup(uint32_t entries, struct dio_uring_params *params) {
    return (int)syscall(__NR_io_uring_setup, entries, params);
}

static inline int dio_io_uring_enter(int fd, uint32_t to_submit, uint32_t min_complete,
                                     uint32_t flags) {
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static inline int dio_io_uring_register(int fd, uint32_t opcode, const void *arg, uint32_t nr_args) {
    return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
}

// pwritev2 with RWF_* flags (glibc declares it only under _GNU_SOURCE). On 64-bit kernels
// the offset goes whole in pos_l; pos_h is the 32-bit ABI's high half.
static inline long dio_pwritev2(int fd, const struct iovec *iov, int iovcnt, int64_t offset, int flags) {
    return syscall(SYS_pwritev2, fd, iov, iovcnt, (unsigned long)offset, (unsigned long)((uint64_t)offset >> 32), flags);
}

static inline int dio_statx(int dirfd, const char *path, int flags, uint32_t mask,
                            struct dio_statx *out) {
    return (int)syscall(SYS_statx, dirfd, path, flags, mask, out);
}

static inline int dio_fallocate(int fd, int mode, int64_t offset, int64_t length) {
    return (int)syscall(SYS_fallocate, fd, mode, offset, length);
}

// fstatfs(2), reduced to the filesystem magic number (f_type), which is all DirectIO reads.
static inline int dio_fstatfs_type(int fd, int64_t *type) {
    struct statfs buf;
    int result = fstatfs(fd, &buf);
    if (result == 0) *type = (int64_t)buf.f_type;
    return result;
}

static inline int dio_ioctl_ptr(int fd, unsigned long request, void *arg) {
    return (int)syscall(SYS_ioctl, fd, request, arg);
}

// copy_file_range, splice and sendfile through syscall(): glibc declares the first two only
// under _GNU_SOURCE, which Swift's Glibc module does not set. Offsets are in/out pointers, or
// NULL to use (and advance) the descriptor's own position.
static inline long dio_copy_file_range(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out,
                                       size_t len) {
    return syscall(SYS_copy_file_range, fd_in, off_in, fd_out, off_out, len, 0U);
}

static inline long dio_splice(int fd_in, int64_t *off_in, int fd_out, int64_t *off_out, size_t len,
                              unsigned int flags) {
    return syscall(SYS_splice, fd_in, off_in, fd_out, off_out, len, flags);
}

static inline long dio_sendfile(int out_fd, int in_fd, int64_t *offset, size_t count) {
    return syscall(SYS_sendfile, out_fd, in_fd, offset, count);
}

static inline int64_t dio_lseek(int fd, int64_t offset, int whence) {
    return (int64_t)syscall(SYS_lseek, fd, offset, whence);
}

static inline int dio_pipe2(int fds[2], int flags) {
    return (int)syscall(SYS_pipe2, fds, flags);
}

// eventfd(0, EFD_CLOEXEC): the async runtime's wake-up for a worker asleep in io_uring_enter.
static inline int dio_eventfd(void) {
    return (int)syscall(SYS_eventfd2, 0, 02000000 /* EFD_CLOEXEC */);
}

static inline int dio_fcntl_int(int fd, int command, int value) {
    return (int)syscall(SYS_fcntl, fd, command, value);
}

// CRC-32C (Castagnoli) of `length` bytes, continuing from `crc` (start with 0). Uses the
// SSE4.2 crc32 instruction where the CPU has it (8 bytes per instruction), else a table.
uint32_t dio_crc32c(uint32_t crc, const void *bytes, size_t length);

static inline int dio_ioctl_value(int fd, unsigned long request, unsigned long arg) {
    return (int)syscall(SYS_ioctl, fd, request, arg);
}

static inline int dio_open(const char *path, int flags, unsigned int mode) {
    return (int)syscall(SYS_openat, -100 /* AT_FDCWD */, path, flags, mode);
}

// fork(2), with the child leaving at once through _exit: for tests that show buffers marked
// MADV_DONTFORK keep their data when a process forks with I/O in flight. (Swift's Glibc
// overlay marks fork unavailable; a child of a multithreaded process may only call
// async-signal-safe functions, and _exit is one.)
static inline int dio_fork_and_exit_child(void) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    return (int)pid;
}

// MARK: - Ordering on indices shared with the kernel.
// The kernel reads the SQ tail and writes the CQ tail concurrently with us: a load of an index
// the kernel publishes must be an acquire (so the entries it covers are visible before we read
// them) and a store of an index we publish must be a release (so the kernel sees the entries
// we wrote before it sees the new index). See liburing src/include/liburing/barrier.h.

static inline uint32_t dio_load_acquire(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void dio_store_release(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline uint32_t dio_load_relaxed(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

int dio_shim_version(void);

#endif
