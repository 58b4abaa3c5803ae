// Compile-time checks that the mirrored structs in CDirectIO.h match the kernel ABI.
// Sizes come from include/uapi/linux/io_uring.h and include/uapi/linux/stat.h; where the
// installed header has the struct, the mirror is checked against it too.
#include "CDirectIO.h"
#include <fcntl.h>

_Static_assert(sizeof(struct dio_sqe) == 64, "io_uring_sqe is 64 bytes");
_Static_assert(offsetof(struct dio_sqe, user_data) == 32, "sqe.user_data at 32");
_Static_assert(offsetof(struct dio_sqe, buf_index) == 40, "sqe.buf_index at 40");
_Static_assert(offsetof(struct dio_sqe, addr3) == 48, "sqe.addr3 at 48");
_Static_assert(sizeof(struct dio_sqe) == sizeof(struct io_uring_sqe), "sqe mirror");
_Static_assert(sizeof(struct dio_cqe) == 16, "io_uring_cqe is 16 bytes");
_Static_assert(sizeof(struct dio_cqe) == sizeof(struct io_uring_cqe), "cqe mirror");
_Static_assert(sizeof(struct dio_sqring_offsets) == 40, "io_sqring_offsets is 40 bytes");
_Static_assert(sizeof(struct dio_cqring_offsets) == 40, "io_cqring_offsets is 40 bytes");
_Static_assert(sizeof(struct dio_uring_params) == 120, "io_uring_params is 120 bytes");
_Static_assert(sizeof(struct dio_uring_params) == sizeof(struct io_uring_params), "params mirror");
_Static_assert(sizeof(struct dio_probe_op) == 8, "io_uring_probe_op is 8 bytes");
_Static_assert(offsetof(struct dio_probe, ops) == 16, "io_uring_probe header is 16 bytes");
_Static_assert(sizeof(struct dio_rsrc_register) == 32, "io_uring_rsrc_register is 32 bytes");
_Static_assert(sizeof(struct dio_rsrc_update2) == 32, "io_uring_rsrc_update2 is 32 bytes");
_Static_assert(sizeof(struct dio_clone_buffers) == 32, "io_uring_clone_buffers is 32 bytes");
_Static_assert(sizeof(struct dio_statx_timestamp) == 16, "statx_timestamp is 16 bytes");
_Static_assert(sizeof(struct dio_statx) == 256, "struct statx is 256 bytes");
_Static_assert(offsetof(struct dio_statx, stx_dio_mem_align) == 0x98, "stx_dio_mem_align at 0x98");
_Static_assert(offsetof(struct dio_statx, stx_dio_read_offset_align) == 0xb4,
               "stx_dio_read_offset_align at 0xb4");
_Static_assert(sizeof(struct dio_statx) == sizeof(struct statx), "statx mirror");
_Static_assert(DIO_IOSQE_FIXED_FILE == IOSQE_FIXED_FILE, "IOSQE_FIXED_FILE value");
#ifdef O_DIRECT
_Static_assert(DIO_O_DIRECT == O_DIRECT, "O_DIRECT value");
#endif
#ifdef O_TMPFILE
_Static_assert(DIO_O_TMPFILE == O_TMPFILE, "O_TMPFILE value");
#endif
#ifdef MAP_HUGETLB
_Static_assert(DIO_MAP_HUGETLB == MAP_HUGETLB, "MAP_HUGETLB value");
#endif
#ifdef MADV_DONTFORK
_Static_assert(DIO_MADV_DONTFORK == MADV_DONTFORK, "MADV_DONTFORK value");
#endif

_Static_assert(sizeof(struct dio_file_clone_range) == 32, "file_clone_range is 32 bytes");
#ifdef FICLONE
_Static_assert(DIO_FICLONE == FICLONE, "FICLONE value");
_Static_assert(DIO_FICLONERANGE == FICLONERANGE, "FICLONERANGE value");
#endif
#ifdef F_SETPIPE_SZ
_Static_assert(DIO_F_SETPIPE_SZ == F_SETPIPE_SZ, "F_SETPIPE_SZ value");
#endif

static uint32_t crc32c_table[256];
static int crc32c_table_ready;

static void crc32c_fill_table(void) {
    for (uint32_t index = 0; index < 256; index++) {
        uint32_t crc = index;
        for (int bit = 0; bit < 8; bit++) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78U : crc >> 1;
        crc32c_table[index] = crc;
    }
    __atomic_store_n(&crc32c_table_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc32c_bytes(uint32_t crc, const uint8_t *p, size_t length) {
    // Filling twice from racing threads writes the same values: harmless.
    if (!__atomic_load_n(&crc32c_table_ready, __ATOMIC_ACQUIRE)) crc32c_fill_table();
    while (length--) crc = crc32c_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *p, size_t length) {
    uint64_t wide = crc;
    while (length >= 8) {
        uint64_t word;
        __builtin_memcpy(&word, p, 8);
        wide = __builtin_ia32_crc32di(wide, word);
        p += 8;
        length -= 8;
    }
    uint32_t narrow = (uint32_t)wide;
    while (length--) narrow = __builtin_ia32_crc32qi(narrow, *p++);
    return narrow;
}
#endif

uint32_t dio_crc32c(uint32_t crc, const void *bytes, size_t length) {
    const uint8_t *p = (const uint8_t *)bytes;
    crc = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) return ~crc32c_sse42(crc, p, length);
#endif
    return ~crc32c_bytes(crc, p, length);
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DIO_TSAN 1
#endif
#endif

#ifdef DIO_TSAN
void __tsan_acquire(void *addr);
#endif

// The Swift runtime tells ThreadSanitizer that a continuation's resume happens before its task
// runs again only when the task had already suspended (swift_job_run acquires what
// swift_continuation_resume released). When the resume wins the race to the task's await, the
// task goes on without that acquire and ThreadSanitizer reports the resumer's read of the
// continuation's context against the task's next use of that memory. This is the missing
// acquire, on the same address (the task); a no-op in builds without ThreadSanitizer.
void dio_tsan_acquire(const void *address) {
#ifdef DIO_TSAN
    __tsan_acquire((void *)address);
#else
    (void)address;
#endif
}

// SwiftPM needs at least one symbol in a C target's object file.
int dio_shim_version(void) { return 1; }
