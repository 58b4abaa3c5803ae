import CDirectIO
import Glibc

/// One request in the form every engine understands: an opcode and its arguments.
///
/// It holds raw addresses: building one is safe, but the memory it names must stay valid and
/// untouched until the engine reports the request complete. Only `IOEngine` and `DirectFile`
/// build them, from buffers they keep borrowed or own for that long.
package struct IOOperation {
    package var opcode: Opcode
    /// The descriptor (the blocking engine always uses it).
    package var fd: Int32
    /// The descriptor's slot in the ring's fixed-file table, when it has one: the ring names
    /// the file by slot (IOSQE_FIXED_FILE) instead.
    package var fileSlot: Int32 = -1
    /// Buffer address (READ/WRITE/…_FIXED), iovec array (READV/WRITEV), or 0.
    package var address: UInt = 0
    /// Bytes (READ/WRITE/…_FIXED) or iovec count (READV/WRITEV).
    package var length: UInt32 = 0
    /// File offset.
    package var offset: Int64 = 0
    /// FALLOCATE: the byte count to allocate.
    package var allocateLength: Int64 = 0
    /// FSYNC: data only. FALLOCATE: the mode bits.
    package var dataOnly: Bool = false
    package var mode: Int32 = 0
    /// READ_FIXED/WRITE_FIXED/SEND_ZC: the fixed-buffer slot holding `address`.
    package var bufferIndex: UInt16 = 0
    /// SEND_ZC: whether `bufferIndex` names a registered buffer.
    package var fixedBuffer = false
    /// Reads and writes: RWF_* flags (RWF_ATOMIC for a write that must not tear).
    package var rwFlags: Int32 = 0

    /// A read or write of `count` bytes at `address`: READ_FIXED/WRITE_FIXED when the memory
    /// lies in registered buffer `fixedSlot`, else READ/WRITE. Every API's requests get their
    /// opcode here.
    static func transfer(isRead: Bool, fd: Int32, fileSlot: Int32 = -1, address: UInt, count: Int, at offset: Int64, fixedSlot: UInt16?) -> IOOperation {
        let opcode: Opcode = isRead ? (fixedSlot == nil ? .read : .readFixed) : (fixedSlot == nil ? .write : .writeFixed)
        return IOOperation(opcode: opcode, fd: fd, fileSlot: fileSlot, address: address, length: UInt32(count), offset: offset, bufferIndex: fixedSlot ?? 0)
    }

    static func read(fd: Int32, fileSlot: Int32 = -1, into address: UnsafeMutableRawPointer, count: Int, at offset: Int64, fixedSlot: UInt16?) -> IOOperation {
        transfer(isRead: true, fd: fd, fileSlot: fileSlot, address: UInt(bitPattern: address), count: count, at: offset, fixedSlot: fixedSlot)
    }

    static func write(fd: Int32, fileSlot: Int32 = -1, from address: UnsafeRawPointer, count: Int, at offset: Int64, fixedSlot: UInt16?) -> IOOperation {
        transfer(isRead: false, fd: fd, fileSlot: fileSlot, address: UInt(bitPattern: address), count: count, at: offset, fixedSlot: fixedSlot)
    }

    /// A write that lands whole or not at all (RWF_ATOMIC). Never WRITE_FIXED: the kernel
    /// takes an atomic write only from one plain user buffer (ITER_UBUF; a registered buffer's
    /// bvec iterator gets EINVAL, measured on 6.18), so the memory goes as an address.
    static func atomicWrite(fd: Int32, fileSlot: Int32 = -1, from address: UnsafeRawPointer, count: Int, at offset: Int64) -> IOOperation {
        var operation = transfer(isRead: false, fd: fd, fileSlot: fileSlot, address: UInt(bitPattern: address), count: count, at: offset, fixedSlot: nil)
        operation.rwFlags = DIO_RWF_ATOMIC
        return operation
    }

    static func vectored(_ opcode: Opcode, fd: Int32, fileSlot: Int32 = -1, vectors: UnsafeMutablePointer<iovec>, count: Int, at offset: Int64) -> IOOperation {
        IOOperation(opcode: opcode, fd: fd, fileSlot: fileSlot, address: UInt(bitPattern: vectors), length: UInt32(count), offset: offset)
    }

    static func fsync(fd: Int32, fileSlot: Int32 = -1, dataOnly: Bool) -> IOOperation {
        IOOperation(opcode: .fsync, fd: fd, fileSlot: fileSlot, dataOnly: dataOnly)
    }

    static func fallocate(fd: Int32, fileSlot: Int32 = -1, mode: Int32, offset: Int64, length: Int64) -> IOOperation {
        IOOperation(opcode: .fallocate, fd: fd, fileSlot: fileSlot, offset: offset, allocateLength: length, mode: mode)
    }

    /// SEND_ZC of `count` bytes at `address` on the socket `fd`: the network stack transmits
    /// from this memory, so it stays the request's until the notification completion.
    static func sendZeroCopy(fd: Int32, from address: UnsafeRawPointer, count: Int, fixedSlot: UInt16?) -> IOOperation {
        IOOperation(opcode: .sendZeroCopy, fd: fd, address: UInt(bitPattern: address), length: UInt32(count), bufferIndex: fixedSlot ?? 0, fixedBuffer: fixedSlot != nil)
    }

    static func nop() -> IOOperation { IOOperation(opcode: .nop, fd: -1) }

    /// Bytes this operation moves (0 for operations that move none).
    package var byteCount: Int {
        switch opcode {
        case .read, .write, .readFixed, .writeFixed: Int(length)
        case .readv, .writev:
            UnsafeBufferPointer(start: UnsafePointer<iovec>(bitPattern: address), count: Int(length)).reduce(0) { $0 + $1.iov_len }
        default: 0
        }
    }

    /// The same operation with its first `done` bytes removed: what to resubmit after a short
    /// transfer. For vectored operations it rewrites the iovec array in place (the array is the
    /// operation's own copy, never the caller's).
    func advanced(by done: Int) -> IOOperation {
        var next = self
        next.offset += Int64(done)
        switch opcode {
        case .read, .write, .readFixed, .writeFixed:
            // A fixed buffer stays valid: the remainder lies inside the same registered region.
            next.address += UInt(done)
            next.length -= UInt32(done)
        case .readv, .writev:
            guard var vector = UnsafeMutablePointer<iovec>(bitPattern: address) else { return next }
            var remaining = Int(length)
            var skip = done
            while remaining > 0 && skip >= vector.pointee.iov_len {
                skip -= vector.pointee.iov_len
                vector += 1
                remaining -= 1
            }
            if remaining > 0 && skip > 0 {
                vector.pointee.iov_base = vector.pointee.iov_base.map { $0 + skip }
                vector.pointee.iov_len -= skip
            }
            next.address = UInt(bitPattern: vector)
            next.length = UInt32(remaining)
        default:
            break
        }
        return next
    }
}
