import CDirectIO
import SystemPackage

/// One file's argument checks and error wording, shared by `DirectFile` and `AsyncFile` so
/// both refuse the same requests with the same words.
struct FileRules: Sendable {
    let path: String
    let limits: DeviceLimits
    let isDirect: Bool
    let alignment: AlignmentCheck

    init(path: String, limits: DeviceLimits, isDirect: Bool) {
        self.path = path
        self.limits = limits
        self.isDirect = isDirect
        self.alignment = AlignmentCheck(limits: limits, isDirect: isDirect)
    }

    func checkArguments(name: String, address: UInt, offset: Int64, length: Int, isRead: Bool) throws(DirectIOError) {
        if let problem = AlignmentCheck.argumentProblem(offset: offset, length: length) {
            throw DirectIOError(.invalidArgument, operation: name, path: path, offset: offset, length: length, detail: problem)
        }
        if let violation = alignment.violation(address: address, offset: offset, length: length, isRead: isRead) {
            throw DirectIOError(.misaligned, operation: name, path: path, offset: offset, length: length, detail: AlignmentCheck.describe(violation, limits: limits, isRead: isRead))
        }
    }

    /// The size of the file open as `fd` (for a block device, its capacity).
    func size(of fd: Int32, operation: String) throws(DirectIOError) -> Int64 {
        try Self.size(of: fd, isBlockDevice: limits.isBlockDevice, path: path, operation: operation)
    }

    static func size(of fd: Int32, isBlockDevice: Bool, path: String, operation: String) throws(DirectIOError) -> Int64 {
        if isBlockDevice {
            var bytes: UInt64 = 0
            do { try Sys.ioctl(fd, DIO_BLKGETSIZE64, &bytes) } catch {
                throw .system(error, operation: operation, call: "ioctl(BLKGETSIZE64)", path: path)
            }
            return Int64(bytes)
        }
        do { return Int64(try Sys.fstat(fd).st_size) } catch {
            throw .system(error, operation: operation, call: "fstat", path: path)
        }
    }

    /// Checks a vectored request: too many buffers, or a bad offset or total length, throw.
    /// Returns true when a buffer breaks the alignment and `realign` allows realigning the
    /// request; throws `.misaligned` naming that buffer otherwise.
    func checkVectors(_ vectors: [iovec], name: String, offset: Int64, isRead: Bool, realign: Bool) throws(DirectIOError) -> Bool {
        let total = vectors.reduce(0) { $0 + $1.iov_len }
        guard vectors.count <= AlignmentCheck.maxVectors else {
            throw DirectIOError(.invalidArgument, operation: name, path: path, offset: offset, length: total, detail: "\(vectors.count) buffers exceed IOV_MAX (\(AlignmentCheck.maxVectors))")
        }
        if let problem = AlignmentCheck.argumentProblem(offset: offset, length: total) {
            throw DirectIOError(.invalidArgument, operation: name, path: path, offset: offset, length: total, detail: problem)
        }
        for (position, vector) in vectors.enumerated() {
            guard let violation = alignment.violation(address: UInt(bitPattern: vector.iov_base), offset: offset, length: vector.iov_len, isRead: isRead) else { continue }
            if realign { return true }
            throw DirectIOError(.misaligned, operation: name, path: path, offset: offset, length: total,
                                detail: "buffer \(position): " + AlignmentCheck.describe(violation, limits: limits, isRead: isRead))
        }
        return false
    }

    func checkFits(_ length: Int, in capacity: Int, operation: String, offset: Int64) throws(DirectIOError) {
        guard length >= 0 && length <= capacity else {
            throw DirectIOError(.invalidArgument, operation: operation, path: path, offset: offset, length: length, detail: "count \(length) does not fit the \(capacity)-byte buffer")
        }
    }

    /// Checks an atomic (untorn) write before anything reaches the kernel, naming the limit
    /// it breaks: direct I/O on a file with atomic write support, a power-of-two length within
    /// the units, an offset that is a multiple of the length, aligned memory in one piece.
    func checkAtomicWrite(name: String, address: UInt, offset: Int64, length: Int) throws(DirectIOError) {
        func refuse(_ code: DirectIOError.Code, _ detail: String) -> DirectIOError {
            DirectIOError(code, operation: name, path: path, offset: offset, length: length, detail: detail + "; nothing was written")
        }
        if let problem = AlignmentCheck.argumentProblem(offset: offset, length: length) { throw refuse(.invalidArgument, problem) }
        guard isDirect else {
            throw refuse(.unsupported, "atomic writes need direct I/O, and this file is open for buffered I/O")
        }
        guard let unitMin = limits.atomicWriteUnitMin, let unitMax = limits.atomicWriteUnitMax else {
            throw refuse(.unsupported, "\(limits.filesystem) on device \(limits.device) reports no atomic write support (statx STATX_WRITE_ATOMIC): a write here can tear; on Linux 6.13+ xfs and ext4 offer it where the device or the filesystem's block size allows")
        }
        guard length > 0 && length.nonzeroBitCount == 1 else {
            throw refuse(.invalidArgument, "an atomic write's length must be a power of two (\(length) is not)")
        }
        guard length >= unitMin && length <= unitMax else {
            throw refuse(.invalidArgument, "an atomic write here is \(unitMin) to \(unitMax) bytes (statx atomic_write_unit_min and _max); \(length) is outside")
        }
        guard offset % Int64(length) == 0 else {
            throw refuse(.misaligned, "an atomic write's offset must be a multiple of its length (\(length)): \(offset) is not")
        }
        guard address % UInt(limits.memoryAlignment) == 0 else {
            throw refuse(.misaligned, "an atomic write's memory must be aligned to \(limits.memoryAlignment) bytes (direct I/O, no bounce buffer may split it): 0x\(String(address, radix: 16)) is not")
        }
    }

    func checkEmpty(_ name: String, _ offset: Int64) throws(DirectIOError) -> Int {
        if let problem = AlignmentCheck.argumentProblem(offset: offset, length: 0) {
            throw DirectIOError(.invalidArgument, operation: name, path: path, offset: offset, length: 0, detail: problem)
        }
        return 0
    }

    /// The error for a failed request. EINVAL under O_DIRECT almost always means alignment
    /// (open(2)), so it is reported as `.misaligned` with the limit that was broken, or, when
    /// the request met every reported limit, with the limits it met.
    func failure(_ errno: Errno, name: String, call: String, address: UInt?, offset: Int64, length: Int, isRead: Bool, done: Int) -> DirectIOError {
        let partial = done > 0 ? "\(done) bytes were transferred before the failure" : nil
        if errno == .invalidArgument && isDirect {
            let broken = address.flatMap { alignment.violation(address: $0, offset: offset, length: length, isRead: isRead) }
                .map { AlignmentCheck.describe($0, limits: limits, isRead: isRead) }
            let detail = broken ?? "the kernel rejected direct I/O that meets the reported limits (memory alignment \(limits.memoryAlignment), offset alignment \(isRead ? limits.readOffsetAlignment : limits.offsetAlignment)); the file may need buffered I/O"
            return DirectIOError(.misaligned, operation: name, path: path, offset: offset, length: length, systemCall: call, errno: errno,
                                 detail: [detail, partial].compactMap { $0 }.joined(separator: "; "))
        }
        return .system(errno, operation: name, call: call, path: path, offset: offset + Int64(done), length: length, detail: partial)
    }
}
