import CDirectIO

/// Filling SQEs, one function per operation DirectIO issues. Field use follows
/// include/uapi/linux/io_uring.h and liburing's io_uring_prep_* helpers.
extension UnsafeMutablePointer where Pointee == dio_sqe {
    /// READ, WRITE, READ_FIXED, WRITE_FIXED: `len` bytes at `address`, file offset `offset`.
    /// READV/WRITEV: `address` is an iovec array and `len` its count.
    @inline(__always)
    func prepareReadWrite(_ opcode: Opcode, fd: Int32, address: UInt, length: UInt32, offset: Int64, bufferIndex: UInt16 = 0, rwFlags: Int32 = 0) {
        pointee.opcode = opcode.rawValue
        pointee.op_flags = UInt32(bitPattern: rwFlags)
        pointee.fd = fd
        pointee.addr = UInt64(address)
        pointee.len = length
        pointee.off = UInt64(bitPattern: offset)
        pointee.buf_index = bufferIndex
    }

    /// FSYNC; `dataOnly` sets IORING_FSYNC_DATASYNC (fdatasync semantics).
    @inline(__always)
    func prepareFsync(fd: Int32, dataOnly: Bool) {
        pointee.opcode = Opcode.fsync.rawValue
        pointee.fd = fd
        pointee.op_flags = dataOnly ? IORING_FSYNC_DATASYNC : 0
    }

    /// FALLOCATE: the kernel takes the length in `addr` and the mode in `len`.
    @inline(__always)
    func prepareFallocate(fd: Int32, mode: Int32, offset: Int64, length: Int64) {
        pointee.opcode = Opcode.fallocate.rawValue
        pointee.fd = fd
        pointee.off = UInt64(bitPattern: offset)
        pointee.addr = UInt64(bitPattern: length)
        pointee.len = UInt32(bitPattern: mode)
    }

    /// SEND_ZC (Linux 6.0): sends from `address` without copying it into socket buffers, and
    /// with REPORT_USAGE the notification says whether the kernel had to copy after all.
    /// MSG_NOSIGNAL: a closed peer is an EPIPE result, not a signal that kills the process.
    @inline(__always)
    func prepareSendZeroCopy(fd: Int32, address: UInt, length: UInt32, bufferIndex: UInt16?) {
        pointee.opcode = Opcode.sendZeroCopy.rawValue
        pointee.fd = fd
        pointee.addr = UInt64(address)
        pointee.len = length
        pointee.op_flags = UInt32(DIO_MSG_NOSIGNAL)
        pointee.ioprio = DIO_IORING_SEND_ZC_REPORT_USAGE
        if let bufferIndex {
            pointee.ioprio |= DIO_IORING_RECVSEND_FIXED_BUF
            pointee.buf_index = bufferIndex
        }
    }

    /// ASYNC_CANCEL of the request whose user data is `target`.
    @inline(__always)
    func prepareCancel(target: UInt64) {
        pointee.opcode = Opcode.asyncCancel.rawValue
        pointee.fd = -1
        pointee.addr = target
    }

    @inline(__always)
    func prepareNop() {
        pointee.opcode = Opcode.nop.rawValue
        pointee.fd = -1
    }
}
