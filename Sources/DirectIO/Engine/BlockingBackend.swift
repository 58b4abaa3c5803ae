import Glibc
import SystemPackage

/// The fallback backend: each operation is one blocking system call, run when submitted.
/// Results use the io_uring convention (bytes, or -errno) so the rest of DirectIO cannot tell
/// the backends apart.
final class BlockingBackend: EngineBackend {
    private var queued: [(operation: IOOperation, userData: UInt64)] = []
    private var completed: [RawCompletion] = []
    let submissionCapacity: Int

    var kind: EngineKind { .blocking }
    /// Each queued operation yields one completion at submit.
    var completionCapacity: Int { submissionCapacity }
    var fixedBufferSlots: Int { 0 }
    var fixedFileSlots: Int { 0 }

    init(capacity: Int) {
        submissionCapacity = capacity
        queued.reserveCapacity(capacity)
        completed.reserveCapacity(capacity * 2)
    }

    func enqueue(_ operation: IOOperation, userData: UInt64) -> Bool {
        guard queued.count < submissionCapacity else { return false }
        queued.append((operation, userData))
        return true
    }

    func enqueueCancel(target: UInt64, userData: UInt64) -> Bool {
        // Every request has finished by the time it could be cancelled: ENOENT, as io_uring
        // reports for a request it no longer holds.
        guard queued.count < submissionCapacity else { return false }
        queued.append((IOOperation(opcode: .asyncCancel, fd: -1, address: UInt(truncatingIfNeeded: target)), userData))
        return true
    }

    func submit(waitingFor minimum: Int) throws(Errno) {
        for (operation, userData) in queued {
            completed.append(RawCompletion(userData: userData, result: Self.perform(operation), flags: 0))
        }
        queued.removeAll(keepingCapacity: true)
    }

    func reap(into buffer: UnsafeMutablePointer<RawCompletion>, limit: Int) -> Int {
        let count = min(limit, completed.count)
        for index in 0..<count { buffer[index] = completed[index] }
        completed.removeFirst(count)
        return count
    }

    func supports(_ opcode: Opcode) -> Bool {
        switch opcode {
        case .nop, .read, .write, .readFixed, .writeFixed, .readv, .writev, .fsync, .fallocate, .asyncCancel: true
        case .splice, .sendZeroCopy: false
        }
    }

    func updateFixedBuffers(first: Int, regions: [iovec]) throws(Errno) {
        throw .notSupported
    }

    func updateFixedFiles(first: Int, fds: [Int32]) throws(Errno) {
        throw .notSupported
    }

    /// The system call `perform` makes for `opcode` (errors name it).
    static func systemCallName(of opcode: Opcode, dataOnly: Bool, rwFlags: Int32) -> String {
        switch opcode {
        case .read, .readFixed: "pread"
        case .write, .writeFixed: rwFlags != 0 ? "pwritev2" : "pwrite"
        case .readv: "preadv"
        case .writev: "pwritev"
        case .fsync: dataOnly ? "fdatasync" : "fsync"
        case .fallocate: "fallocate"
        case .nop, .asyncCancel, .splice, .sendZeroCopy: opcode.description
        }
    }

    /// Runs one operation; returns bytes or -errno. EINTR is retried inside `Sys`.
    static func perform(_ op: IOOperation) -> Int32 {
        do {
            switch op.opcode {
            case .read, .readFixed:
                return Int32(try Sys.pread(op.fd, UnsafeMutableRawPointer(bitPattern: op.address), Int(op.length), op.offset))
            case .write, .writeFixed:
                if op.rwFlags != 0 {
                    var vector = iovec(iov_base: UnsafeMutableRawPointer(bitPattern: op.address), iov_len: Int(op.length))
                    return Int32(try Sys.pwritev2(op.fd, &vector, 1, op.offset, flags: op.rwFlags))
                }
                return Int32(try Sys.pwrite(op.fd, UnsafeRawPointer(bitPattern: op.address), Int(op.length), op.offset))
            case .readv, .writev:
                guard let vectors = UnsafePointer<iovec>(bitPattern: op.address) else { return -EFAULT }
                let count = Int32(op.length)
                let moved = op.opcode == .readv
                    ? try Sys.preadv(op.fd, vectors, count, op.offset)
                    : try Sys.pwritev(op.fd, vectors, count, op.offset)
                return Int32(moved)
            case .fsync:
                try Sys.fsync(op.fd, dataOnly: op.dataOnly)
                return 0
            case .fallocate:
                try Sys.fallocate(op.fd, mode: op.mode, offset: op.offset, length: op.allocateLength)
                return 0
            case .nop:
                return 0
            case .asyncCancel:
                return -ENOENT
            case .splice, .sendZeroCopy:
                return -EOPNOTSUPP
            }
        } catch {
            return -error.rawValue
        }
    }
}
