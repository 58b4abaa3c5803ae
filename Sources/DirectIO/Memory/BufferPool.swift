import Glibc

/// A fixed set of equal, page-aligned buffers carved from one locked mapping, for I/O.
///
/// Register it with an engine (`IOEngine.register(_:)`) and I/O into its buffers uses the
/// fixed-buffer opcodes (READ_FIXED/WRITE_FIXED), which skip pinning the pages on every I/O.
/// When the memory cannot be locked or registered (RLIMIT_MEMLOCK), the pool keeps its full
/// size, works unregistered, and says why in `status` and `description`: it never shrinks.
///
/// Buffers are `~Copyable` `PoolBuffer`s: taking one gives it a single owner, and dropping it
/// returns it. A buffer given to the engine for I/O is owned by the engine until its
/// completion has been reaped, so it cannot come back to the pool while the kernel may still
/// write into it.
public final class BufferPool: Sendable, CustomStringConvertible {
    public let bufferBytes: Int
    public let count: Int
    package let mapping: MappingReport
    /// The mapping's address, kept as an integer: the pool never touches the memory itself;
    /// each buffer's bytes are reached only through its single `PoolBuffer` owner.
    private let baseBits: UInt
    private let state: ConditionLock<State>

    private struct State: Sendable {
        var free: [Int]
        var registration: Registration
        /// How many takes found the pool empty and waited.
        var waits = 0
        /// Tasks suspended until a buffer comes back, in arrival order: a returned buffer goes
        /// to the first of them directly.
        var waitingTasks: [Waiter] = []
    }

    /// A task waiting for a buffer. The buffer handed to it travels here, written and read
    /// under the pool's lock, not through the continuation: a continuation may be resumed
    /// before its task has finished suspending, and the lock is what orders the hand-over for
    /// every reader (ThreadSanitizer included).
    ///
    /// Unchecked sendability: every field is written and read only with the pool's lock held,
    /// except `resume`, which is set before the waiter is published under that lock.
    private final class Waiter: @unchecked Sendable {
        var index = -1
        var suspended = false
        var resume: UnsafeContinuation<Void, Never>?
    }

    /// Whether the engine's fixed-buffer table holds this pool's buffers.
    package enum Registration: Sendable, Equatable, CustomStringConvertible {
        case unregistered
        case registered(firstSlot: UInt16)
        /// Registration was attempted and refused; I/O uses the unregistered opcodes.
        case refused(String)

        package var description: String {
            switch self {
            case .unregistered: "not registered"
            case .registered(let first): "registered as fixed buffers \(first)..."
            case .refused(let why): "not registered: \(why)"
            }
        }
    }

    /// - Parameters:
    ///   - count: number of buffers.
    ///   - bufferBytes: size of each, rounded up to the page size so every buffer is page-aligned.
    ///   - hugePages: by default, transparent huge pages once the pool spans 2 MiB.
    public convenience init(count: Int, bufferBytes: Int, hugePages: HugePages = .automatic) throws(DirectIOError) {
        try self.init(count: count, bufferBytes: bufferBytes, hugePages: hugePages, lock: true)
    }

    /// A bounce reserve (an engine's or a runtime's): its memory exists from the start, locked
    /// only where pinning is charged to no limit (`MemoryLimits.pinningIsFree`), else touched
    /// page by page so that it is resident without using RLIMIT_MEMLOCK.
    package static func reserve(count: Int, bufferBytes: Int) throws(DirectIOError) -> BufferPool {
        try BufferPool(count: count, bufferBytes: bufferBytes, hugePages: .none, lock: MemoryLimits.pinningIsFree)
    }

    private init(count: Int, bufferBytes: Int, hugePages: HugePages, lock: Bool) throws(DirectIOError) {
        guard count > 0, bufferBytes > 0 else {
            throw DirectIOError(.invalidArgument, operation: "create buffer pool", length: bufferBytes, detail: "count (\(count)) and buffer size must be positive")
        }
        // A registered buffer may span at most 1 GiB (io_uring_register(2)).
        guard bufferBytes <= 1 << 30 else {
            throw DirectIOError(.invalidArgument, operation: "create buffer pool", length: bufferBytes, detail: "a buffer may be at most 1 GiB (io_uring fixed-buffer limit)")
        }
        let stride = roundUp(bufferBytes, to: Sys.pageSize)
        let (address, report) = try MappedRegion.map(byteCount: stride * count, hugePages: hugePages, lock: lock)
        if !report.locked {
            // Resident before the first request that needs it, locked or not.
            var page = 0
            while page < report.mappedBytes {
                address.storeBytes(of: 0, toByteOffset: page, as: UInt8.self)
                page += Sys.pageSize
            }
        }
        self.bufferBytes = stride
        self.count = count
        self.baseBits = UInt(bitPattern: address)
        self.mapping = report
        self.state = ConditionLock(State(free: Array((0..<count).reversed()), registration: .unregistered))
    }

    deinit {
        // Every PoolBuffer holds a strong reference, so no buffer is outstanding here.
        // The mapping exists for the pool's whole life, so the address is never null.
        guard let base = UnsafeMutableRawPointer(bitPattern: baseBits) else { return }
        MappedRegion.unmap(base, mapping.mappedBytes)
    }

    /// Takes a free buffer, or nil when all are in use.
    public func take() -> PoolBuffer? {
        guard let index = state.withLock({ $0.free.popLast() }) else { return nil }
        return PoolBuffer(pool: self, index: index, address: address(of: index))
    }

    /// Takes a free buffer, waiting for one to be returned when all are in use: like the
    /// kernel's mempool_alloc for a caller that may sleep, it never fails. The caller must not
    /// hold buffers of this pool that only it could return, or it waits forever.
    public func takeWaiting() -> PoolBuffer {
        var waited = false
        return takeWaiting(waited: &waited)
    }

    /// `takeWaiting()` for a task: suspends until a buffer is returned, never blocking the
    /// task's thread (which may be a ring's, or a server's event loop).
    public func takeWaiting() async -> PoolBuffer {
        var waited = false
        return await takeWaiting(waited: &waited)
    }

    /// `takeWaiting()`, also saying whether this call had to wait.
    func takeWaiting(waited counted: inout Bool) -> PoolBuffer {
        counted = false
        let index = state.wait { state -> Int? in
            if let index = state.free.popLast() { return index }
            if !counted {
                counted = true
                state.waits += 1
            }
            return nil
        }
        return PoolBuffer(pool: self, index: index, address: address(of: index))
    }

    /// `takeWaiting()` for a task: suspends (never blocks its thread, which may be a ring's)
    /// until a buffer is returned; says whether it had to wait.
    func takeWaiting(waited: inout Bool) async -> PoolBuffer {
        if let buffer = take() {
            waited = false
            return buffer
        }
        let waiter = Waiter()
        await suspend { (resume: UnsafeContinuation<Void, Never>) in
            // Looked at again under the lock: a buffer may have come back in between.
            let ready = state.withLock { state -> Bool in
                if let index = state.free.popLast() {
                    waiter.index = index
                    return true
                }
                waiter.resume = resume
                waiter.suspended = true
                state.waits += 1
                state.waitingTasks.append(waiter)
                return false
            }
            if ready { resume.resume() }
        }
        let (index, suspended) = state.withLock { _ in (waiter.index, waiter.suspended) }
        waited = suspended
        return PoolBuffer(pool: self, index: index, address: address(of: index))
    }

    /// How many times a caller found the pool empty and waited.
    public var waits: Int { state.withLock { $0.waits } }

    /// Buffers not currently taken.
    public var available: Int { state.withLock { $0.free.count } }

    package var registration: Registration { state.withLock { $0.registration } }

    /// The memory of buffer `index`.
    func address(of index: Int) -> UnsafeMutableRawPointer {
        // baseBits came from a successful mmap, which never returns address 0.
        UnsafeMutableRawPointer(bitPattern: baseBits + UInt(index * bufferBytes)).unsafelyUnwrapped
    }

    /// The iovec of every buffer, in index order, for registration.
    var regions: [iovec] {
        (0..<count).map { iovec(iov_base: address(of: $0), iov_len: bufferBytes) }
    }

    func setRegistration(_ registration: Registration) {
        state.withLock { $0.registration = registration }
    }

    fileprivate func giveBack(_ index: Int) {
        var task: UnsafeContinuation<Void, Never>? = nil
        state.updateAndBroadcast { state in
            if state.waitingTasks.isEmpty {
                state.free.append(index)
            } else {
                let waiter = state.waitingTasks.removeFirst()
                waiter.index = index
                task = waiter.resume
            }
        }
        task?.resume()
    }

    public var description: String {
        "BufferPool(\(count) × \(bufferBytes) bytes, \(mapping), \(registration))"
    }
}

/// One buffer of a `BufferPool`, with a single owner; dropping it returns it to the pool.
///
/// Unchecked sendability is sound: the value is `~Copyable`, so it is the only way to reach
/// its memory, and sending it to another thread moves that access rather than sharing it;
/// the pool it points to is itself `Sendable`.
public struct PoolBuffer: ~Copyable, IOBuffer, @unchecked Sendable {
    public let pool: BufferPool
    public let index: Int
    public let baseAddress: UnsafeMutableRawPointer

    fileprivate init(pool: BufferPool, index: Int, address: UnsafeMutableRawPointer) {
        self.pool = pool
        self.index = index
        self.baseAddress = address
    }

    public var count: Int { pool.bufferBytes }
    public var poolSlot: PoolSlot? { PoolSlot(pool: ObjectIdentifier(pool), index: index) }

    deinit { pool.giveBack(index) }
}
