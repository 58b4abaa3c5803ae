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

// SwiftPM needs at least one symbol in a C target's object file.
int dio_shim_version(void) { return 1; }
