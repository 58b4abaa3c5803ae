import DirectIO
import Glibc
import SystemPackage

/// A device in memory: every file an engine built on it reads and writes lives here, keyed by
/// the file's identity (device and inode), so tests see exactly the bytes that reached the
/// "device", run without disk I/O, and can inject faults with no kernel involved at all.
///
/// Files are still opened on disk (DirectFile opens a real path and reads its limits there),
/// but their data never goes to disk: a file starts empty here, whatever the disk holds, and
/// `DirectFile.size()` still reports the file on disk.
public final class MemoryDevice: Sendable {
    private let files = ConditionLock<[FileIdentity: [UInt8]]>([:])

    struct FileIdentity: Hashable, Sendable { let device: UInt64, inode: UInt64 }

    public init() {}

    /// The bytes of the file at `path` as the device holds them, or nil if nothing was ever
    /// written to it through this device.
    public func contents(ofFileAt path: String) -> [UInt8]? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        let identity = FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        return files.withLock { $0[identity] }
    }

    /// Sets the file's contents, e.g. to start a test from a known state.
    public func setContents(_ bytes: [UInt8], ofFileAt path: String) -> Bool {
        var info = stat()
        guard stat(path, &info) == 0 else { return false }
        let identity = FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        files.withLock { $0[identity] = bytes }
        return true
    }

    static func identity(of fd: Int32) -> FileIdentity? {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Reads up to `count` bytes at `offset` into `destination`: fewer at the end, 0 past it.
    func read(_ identity: FileIdentity, into destination: UnsafeMutableRawPointer, count: Int, at offset: Int64) -> Int {
        files.withLock { files in
            let bytes = files[identity] ?? []
            guard offset < Int64(bytes.count) else { return 0 }
            let moved = min(count, bytes.count - Int(offset))
            bytes.withUnsafeBytes { stored in
                if let base = stored.baseAddress, moved > 0 { destination.copyMemory(from: base + Int(offset), byteCount: moved) }
            }
            return moved
        }
    }

    /// Writes `count` bytes at `offset`, growing the file (with zeros in any gap).
    func write(_ identity: FileIdentity, from source: UnsafeRawPointer, count: Int, at offset: Int64) -> Int {
        files.withLock { files in
            var bytes = files[identity] ?? []
            let end = Int(offset) + count
            if bytes.count < end { bytes.append(contentsOf: repeatElement(0, count: end - bytes.count)) }
            bytes.withUnsafeMutableBytes { stored in
                if let base = stored.baseAddress, count > 0 { (base + Int(offset)).copyMemory(from: source, byteCount: count) }
            }
            files[identity] = bytes
            return count
        }
    }

    /// Grows the file to `end` bytes if it is shorter (fallocate without KEEP_SIZE).
    func extend(_ identity: FileIdentity, to end: Int64) {
        files.withLock { files in
            var bytes = files[identity] ?? []
            if bytes.count < Int(end) { bytes.append(contentsOf: repeatElement(0, count: Int(end) - bytes.count)) }
            files[identity] = bytes
        }
    }
}

extension IOEngine {
    /// An engine whose requests are served by `device` instead of the kernel, optionally with
    /// `faults` injected between the engine and the device: the third engine, for testing
    /// storage code (and DirectIO) with every byte that reaches the device observable.
    public static func inMemory(_ device: MemoryDevice, faults: FaultPlan? = nil, queueDepth: Int = 64) throws(DirectIOError) -> IOEngine {
        try IOEngine(.blocking, queueDepth: queueDepth, ringFlags: .anyThread, fixedBufferSlots: 0, fixedFileSlots: 0) { _ in
            let memory = MemoryBackend(device: device, capacity: queueDepth * 2)
            guard let faults else { return memory }
            return FaultInjectingBackend(wrapping: memory, plan: faults)
        }
    }
}

/// Serves every request at once from a `MemoryDevice`; completions wait for `reap`.
final class MemoryBackend: EngineBackend {
    private let device: MemoryDevice
    private let capacity: Int
    private var outbox: [RawCompletion] = []

    init(device: MemoryDevice, capacity: Int) {
        self.device = device
        self.capacity = capacity
    }

    var kind: EngineKind { .memory }
    var submissionCapacity: Int { capacity }
    var completionCapacity: Int { capacity * 2 }
    var fixedBufferSlots: Int { 0 }
    var fixedFileSlots: Int { 0 }
    func updateFixedBuffers(first: Int, regions: [iovec]) throws(Errno) { throw .notSupported }
    func updateFixedFiles(first: Int, fds: [Int32]) throws(Errno) { throw .notSupported }

    func supports(_ opcode: Opcode) -> Bool {
        switch opcode {
        case .read, .write, .readv, .writev, .fsync, .fallocate, .nop, .asyncCancel: true
        default: false
        }
    }

    func enqueue(_ operation: IOOperation, userData: UInt64) -> Bool {
        guard outbox.count < completionCapacity else { return false }
        outbox.append(RawCompletion(userData: userData, result: perform(operation), flags: 0))
        return true
    }

    func enqueueCancel(target: UInt64, userData: UInt64) -> Bool {
        guard outbox.count < completionCapacity else { return false }
        // Every request completed when it was queued: nothing is left to cancel.
        outbox.append(RawCompletion(userData: userData, result: -ENOENT, flags: 0))
        return true
    }

    func submit(waitingFor minimum: Int) throws(Errno) {}

    func reap(into buffer: UnsafeMutablePointer<RawCompletion>, limit: Int) -> Int {
        let count = min(limit, outbox.count)
        for index in 0..<count { buffer[index] = outbox[index] }
        outbox.removeFirst(count)
        return count
    }

    /// The result a kernel would post: bytes moved, or -errno.
    private func perform(_ operation: IOOperation) -> Int32 {
        if operation.opcode == .nop { return 0 }
        guard let identity = MemoryDevice.identity(of: operation.fd) else { return -EBADF }
        switch operation.opcode {
        case .read, .readFixed:
            guard let address = UnsafeMutableRawPointer(bitPattern: operation.address) else { return -EFAULT }
            return Int32(device.read(identity, into: address, count: Int(operation.length), at: operation.offset))
        case .write, .writeFixed:
            guard let address = UnsafeRawPointer(bitPattern: operation.address) else { return -EFAULT }
            return Int32(device.write(identity, from: address, count: Int(operation.length), at: operation.offset))
        case .readv, .writev:
            guard let vectors = UnsafePointer<iovec>(bitPattern: operation.address) else { return -EFAULT }
            var offset = operation.offset
            var total = 0
            for vector in UnsafeBufferPointer(start: vectors, count: Int(operation.length)) {
                guard let base = vector.iov_base else { return -EFAULT }
                let moved = operation.opcode == .readv
                    ? device.read(identity, into: base, count: vector.iov_len, at: offset)
                    : device.write(identity, from: base, count: vector.iov_len, at: offset)
                total += moved
                offset += Int64(moved)
                if moved < vector.iov_len { break }
            }
            return Int32(total)
        case .fallocate:
            if operation.mode & 0x01 == 0 { device.extend(identity, to: operation.offset + operation.allocateLength) }
            return 0
        case .fsync:
            return 0
        default:
            return -EOPNOTSUPP
        }
    }
}
