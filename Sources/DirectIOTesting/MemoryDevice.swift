import DirectIO
import Glibc
import SystemPackage

/// A device in memory: every file an engine built on it reads and writes lives here, keyed by
/// the file's identity (device and inode), so tests see exactly the bytes that reached the
/// "device", run without disk I/O, and can inject faults with no kernel involved at all.
/// With a simulated write cache it also cuts the power (`powerCut(seed:)`): users crash
/// their storage code at any point, reopen, and check their recovery.
///
/// Files are still opened on disk (DirectFile opens a real path and reads its limits there),
/// but their data never goes to disk: a file starts empty here, whatever the disk holds, and
/// `DirectFile.size()` still reports the file on disk.
public final class MemoryDevice: Sendable {
    private let files = ConditionLock<[FileIdentity: FileState]>([:])
    private let cache: WriteCache?
    private let power = ConditionLock(Power())

    /// A power cut armed to happen during a later write, and whether the power is off.
    private struct Power: Sendable {
        var cutDuringWrite: (remaining: Int, seed: UInt64)?
        var off = false
    }

    struct FileIdentity: Hashable, Sendable { let device: UInt64, inode: UInt64 }

    /// A simulated volatile write cache, as disks and SSDs have one: a write is acknowledged
    /// when it reaches the cache and survives a power cut only once made durable (fsync or
    /// fdatasync of its file, or written with RWF_DSYNC/RWF_SYNC, i.e. FUA).
    public struct WriteCache: Sendable {
        /// The unit a write tears at: a power cut keeps some of a write's blocks and loses others.
        public var logicalBlockSize: Int
        /// Atomic (untorn) writes the device takes (RWF_ATOMIC): they land whole or not at all.
        /// Nil: none, and `DirectFile.atomicWrite` refuses.
        public var atomicWriteUnits: ClosedRange<Int>?

        public init(logicalBlockSize: Int = 4096, atomicWriteUnits: ClosedRange<Int>? = 4096...65536) {
            self.logicalBlockSize = logicalBlockSize
            self.atomicWriteUnits = atomicWriteUnits
        }
    }

    /// What a power cut did to the writes that were not yet durable.
    public struct PowerCut: Sendable, Equatable {
        public var writesLost = 0
        public var writesKept = 0
        /// Writes of which some blocks reached the medium and others did not.
        public var writesTorn = 0

        public init(writesLost: Int = 0, writesKept: Int = 0, writesTorn: Int = 0) {
            self.writesLost = writesLost
            self.writesKept = writesKept
            self.writesTorn = writesTorn
        }
    }

    /// A file's bytes as reads see them, as they would survive a power cut, and the writes
    /// between the two (in arrival order).
    private struct FileState {
        var current: [UInt8] = []
        var durable: [UInt8] = []
        var pending: [PendingWrite] = []
    }

    private struct PendingWrite {
        var offset: Int
        var bytes: [UInt8]
        var atomic: Bool

        /// The parts of this write outside `range` (none, one or two).
        func outside(_ range: Range<Int>) -> [PendingWrite] {
            let end = offset + bytes.count
            guard range.lowerBound < end && offset < range.upperBound else { return [self] }
            var parts: [PendingWrite] = []
            if offset < range.lowerBound {
                parts.append(PendingWrite(offset: offset, bytes: Array(bytes[0..<(range.lowerBound - offset)]), atomic: atomic))
            }
            if range.upperBound < end {
                parts.append(PendingWrite(offset: range.upperBound, bytes: Array(bytes[(range.upperBound - offset)...]), atomic: atomic))
            }
            return parts
        }
    }

    /// - Parameter writeCache: simulate a volatile write cache (`powerCut(seed:)` then loses,
    ///   reorders or tears what was not made durable); nil: every write is durable at once.
    public init(writeCache: WriteCache? = nil) {
        cache = writeCache
    }

    /// The bytes of the file at `path` as reads see them, or nil if nothing was ever written
    /// to it through this device.
    public func contents(ofFileAt path: String) -> [UInt8]? {
        guard let identity = Self.identity(ofPath: path) else { return nil }
        return files.withLock { $0[identity]?.current }
    }

    /// Sets the file's contents (durable), e.g. to start a test from a known state.
    public func setContents(_ bytes: [UInt8], ofFileAt path: String) -> Bool {
        guard let identity = Self.identity(ofPath: path) else { return false }
        files.withLock { $0[identity] = FileState(current: bytes, durable: bytes) }
        return true
    }

    /// Cuts the power: every write not yet durable is lost, kept or torn at logical-block
    /// granularity (atomic writes are kept or lost whole), applied in an order chosen from
    /// `seed`, as a volatile cache may persist them. Afterwards reads see what survived, as
    /// after a reboot. The same seed and the same writes give the same outcome. Without a
    /// write cache nothing changes.
    @discardableResult
    public func powerCut(seed: UInt64) -> PowerCut {
        let blockSize = cache?.logicalBlockSize ?? 4096
        var random = SplitMix(seed: seed)
        var outcome = PowerCut()
        files.withLock { files in
            for identity in files.keys.sorted(by: { ($0.device, $0.inode) < ($1.device, $1.inode) }) {
                guard var state = files[identity] else { continue }
                var image = state.durable
                var order = Array(state.pending.indices)
                random.shuffle(&order)
                for index in order {
                    let write = state.pending[index]
                    switch random.below(write.atomic ? 2 : 3) {
                    case 0:
                        outcome.writesLost += 1
                    case 1:
                        Self.apply(write.bytes[...], at: write.offset, to: &image)
                        outcome.writesKept += 1
                    default:
                        // Torn: each logical block the write touches survives or not.
                        let block = blockSize
                        var start = write.offset
                        var kept = 0, lost = 0
                        while start < write.offset + write.bytes.count {
                            let end = min((start / block + 1) * block, write.offset + write.bytes.count)
                            if random.below(2) == 1 {
                                Self.apply(write.bytes[(start - write.offset)..<(end - write.offset)], at: start, to: &image)
                                kept += 1
                            } else {
                                lost += 1
                            }
                            start = end
                        }
                        if kept > 0 && lost > 0 { outcome.writesTorn += 1 } else if kept > 0 { outcome.writesKept += 1 } else { outcome.writesLost += 1 }
                    }
                }
                state = FileState(current: image, durable: image)
                files[identity] = state
            }
        }
        return outcome
    }

    /// Arms a power cut during the write that comes after `writes` more (0: the next one):
    /// that write is torn like an undurable one and fails with EIO, `powerCut(seed:)` happens
    /// with it, and every request fails with EIO until `restorePower()`. For crash points
    /// inside the code under test, not only between its calls.
    public func cutPower(duringWriteAfter writes: Int, seed: UInt64) {
        power.withLock { $0.cutDuringWrite = (writes, seed) }
    }

    /// Turns the power back on (a reboot): requests work again, on what survived.
    public func restorePower() {
        power.withLock { $0 = Power() }
    }

    /// Whether the power is off (after an armed cut).
    public var isPoweredOff: Bool { power.withLock { $0.off } }

    static func identity(of fd: Int32) -> FileIdentity? {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    static func identity(ofPath path: String) -> FileIdentity? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    /// Reads up to `count` bytes at `offset` into `destination`: fewer at the end, 0 past it.
    func read(_ identity: FileIdentity, into destination: UnsafeMutableRawPointer, count: Int, at offset: Int64) -> Int {
        files.withLock { files in
            let bytes = files[identity]?.current ?? []
            guard offset < Int64(bytes.count) else { return 0 }
            let moved = min(count, bytes.count - Int(offset))
            bytes.withUnsafeBytes { stored in
                if let base = stored.baseAddress, moved > 0 { destination.copyMemory(from: base + Int(offset), byteCount: moved) }
            }
            return moved
        }
    }

    /// Writes `count` bytes at `offset`, growing the file (with zeros in any gap). `durable`:
    /// written through the cache (RWF_DSYNC, FUA); `atomic`: never torn by a power cut.
    /// Returns nil when the power failed during this write.
    func write(_ identity: FileIdentity, from source: UnsafeRawPointer, count: Int, at offset: Int64, durable: Bool = false, atomic: Bool = false) -> Int? {
        let bytes = [UInt8](UnsafeRawBufferPointer(start: source, count: count))
        let cutSeed = power.withLock { power -> UInt64? in
            guard let armed = power.cutDuringWrite else { return nil }
            guard armed.remaining == 0 else {
                power.cutDuringWrite = (armed.remaining - 1, armed.seed)
                return nil
            }
            power.cutDuringWrite = nil
            power.off = true
            return armed.seed
        }
        if let cutSeed {
            // In flight when the power went: as undurable as a write can be.
            files.withLock { files in
                var state = files[identity] ?? FileState()
                state.pending.append(PendingWrite(offset: Int(offset), bytes: bytes, atomic: atomic))
                files[identity] = state
            }
            powerCut(seed: cutSeed)
            return nil
        }
        files.withLock { files in
            var state = files[identity] ?? FileState()
            files[identity] = nil  // uniquely referenced while it changes
            Self.apply(bytes[...], at: Int(offset), to: &state.current)
            if cache == nil || durable {
                Self.apply(bytes[...], at: Int(offset), to: &state.durable)
                // A device's cache holds the newest data of each block: what an earlier write
                // left there can no longer reach the medium over this one.
                state.pending = state.pending.flatMap { $0.outside(Int(offset)..<Int(offset) + count) }
            } else {
                state.pending.append(PendingWrite(offset: Int(offset), bytes: bytes, atomic: atomic))
            }
            files[identity] = state
        }
        return count
    }

    /// Makes the file's writes durable (fsync, fdatasync).
    func flush(_ identity: FileIdentity) {
        files.withLock { files in
            guard var state = files[identity] else { return }
            state.durable = state.current
            state.pending.removeAll()
            files[identity] = state
        }
    }

    /// Grows the file to `end` bytes if it is shorter (fallocate without KEEP_SIZE; durable
    /// at once, as a journaled size change is).
    func extend(_ identity: FileIdentity, to end: Int64) {
        files.withLock { files in
            var state = files[identity] ?? FileState()
            if state.current.count < Int(end) { state.current.append(contentsOf: repeatElement(0, count: Int(end) - state.current.count)) }
            if state.durable.count < Int(end) { state.durable.append(contentsOf: repeatElement(0, count: Int(end) - state.durable.count)) }
            files[identity] = state
        }
    }

    /// The limits of a file on this device: its simulated atomic write units.
    func limits(for limits: DeviceLimits) -> DeviceLimits {
        var limits = limits
        if let units = cache?.atomicWriteUnits {
            limits.atomicWriteUnitMin = units.lowerBound
            limits.atomicWriteUnitMax = units.upperBound
            limits.atomicWriteSegmentsMax = 1
        }
        return limits
    }

    private static func apply(_ bytes: ArraySlice<UInt8>, at offset: Int, to image: inout [UInt8]) {
        let end = offset + bytes.count
        if image.count < end { image.append(contentsOf: repeatElement(0, count: end - image.count)) }
        image.replaceSubrange(offset..<end, with: bytes)
    }
}

/// The choices of a power cut, from its seed.
private extension SplitMix {
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    mutating func shuffle(_ values: inout [Int]) {
        guard values.count > 1 else { return }
        for index in stride(from: values.count - 1, to: 0, by: -1) {
            values.swapAt(index, below(index + 1))
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

extension IORuntime {
    /// A runtime whose rings are served by `device` (with `faults` between, if given): async
    /// code tested against the same observable bytes, faults and power cuts as `inMemory`
    /// engines. Each ring is a thread over its own in-memory engine.
    public static func inMemory(_ device: MemoryDevice, faults: FaultPlan? = nil, rings: Int = 1, queueDepth: Int = 64) throws(DirectIOError) -> IORuntime {
        try IORuntime(rings: rings, queueDepth: queueDepth, engine: .blocking, bounceBuffers: 8, bounceBufferBytes: 256 << 10) { _ in
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

    /// RWF_DSYNC, RWF_SYNC and RWF_ATOMIC (include/uapi/linux/fs.h).
    static let rwfDSync: Int32 = 0x02, rwfSync: Int32 = 0x04, rwfAtomic: Int32 = 0x40

    var kind: EngineKind { .memory }

    func limits(for limits: DeviceLimits) -> DeviceLimits { device.limits(for: limits) }
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
        if device.isPoweredOff { return -EIO }
        guard let identity = MemoryDevice.identity(of: operation.fd) else { return -EBADF }
        switch operation.opcode {
        case .read, .readFixed:
            guard let address = UnsafeMutableRawPointer(bitPattern: operation.address) else { return -EFAULT }
            return Int32(device.read(identity, into: address, count: Int(operation.length), at: operation.offset))
        case .write, .writeFixed:
            guard let address = UnsafeRawPointer(bitPattern: operation.address) else { return -EFAULT }
            let durable = operation.rwFlags & (Self.rwfDSync | Self.rwfSync) != 0
            guard let written = device.write(identity, from: address, count: Int(operation.length), at: operation.offset,
                                             durable: durable, atomic: operation.rwFlags & Self.rwfAtomic != 0) else { return -EIO }
            return Int32(written)
        case .readv, .writev:
            guard let vectors = UnsafePointer<iovec>(bitPattern: operation.address) else { return -EFAULT }
            var offset = operation.offset
            var total = 0
            for vector in UnsafeBufferPointer(start: vectors, count: Int(operation.length)) {
                guard let base = vector.iov_base else { return -EFAULT }
                let moved = operation.opcode == .readv
                    ? device.read(identity, into: base, count: vector.iov_len, at: offset)
                    : device.write(identity, from: base, count: vector.iov_len, at: offset)
                guard let moved else { return -EIO }
                total += moved
                offset += Int64(moved)
                if moved < vector.iov_len { break }
            }
            return Int32(total)
        case .fallocate:
            if operation.mode & 0x01 == 0 { device.extend(identity, to: operation.offset + operation.allocateLength) }
            return 0
        case .fsync:
            device.flush(identity)
            return 0
        default:
            return -EOPNOTSUPP
        }
    }
}
