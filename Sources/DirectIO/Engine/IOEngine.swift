import CDirectIO
import Glibc
import SystemPackage

/// Moves requests between DirectIO and the kernel: io_uring where the kernel allows it,
/// blocking system calls where it does not, with identical results either way.
///
/// The engine owns the state of every request in flight: it retries EAGAIN and EINTR,
/// resubmits the remainder of short transfers, reports EOF as a short count, and holds the
/// buffer of every batched request until that request's final completion has been reaped.
/// Dropping the engine cancels what is still in flight and waits for the kernel to finish with
/// it before any buffer is released.
///
/// An engine is used by one thread at a time (it is not `Sendable`); with
/// `RingSetupFlags.threadPerCore` it must stay on the thread that created it.
public final class IOEngine {
    public let kind: EngineKind
    /// Ring setup flags the kernel accepted; nil for the blocking engine.
    public let ringFlags: RingSetupFlags?
    /// Why the blocking engine serves an `.automatic` request, or why fixed buffers are off.
    public let notes: [String]
    /// Requests that may be in flight at once.
    public let capacity: Int

    let backend: any EngineBackend
    private var slots: UnsafeMutablePointer<Slot>
    private var freeSlots: [Int32]
    private var finishedBatch: [Int32] = []
    /// The finished requests being handed out by `reap` (kept to reuse its storage).
    private var reaping: [Int32] = []
    private var collected: [RawCompletion] = []
    private var pendingCancels = 0
    /// Batched requests submitted and not yet finished (finished ones wait in `finishedBatch`).
    private var batchedInFlight = 0
    private var fixedSlots: FixedSlotAllocator
    private var fileSlots: FixedSlotAllocator
    private var pools: [ObjectIdentifier: (pool: BufferPool, firstSlot: Int)] = [:]
    private var lastPool: (id: ObjectIdentifier, firstSlot: Int)? = nil
    private let ownerThread: pthread_t?
    public private(set) var statistics = EngineStatistics()

    /// Which engine to use.
    public enum Choice: Sendable, Equatable {
        /// io_uring when it works here, else blocking (the reason is in `notes`). The
        /// environment variable DIRECTIO_ENGINE=blocking|io_uring overrides it.
        case automatic
        case ioUring
        case blocking
    }

    /// - Parameters:
    ///   - choice: which engine; `.ioUring` fails if io_uring is unavailable.
    ///   - queueDepth: requests in flight at once (the ring gets this many SQEs and twice as
    ///     many CQEs, so completions can never outnumber CQ slots).
    ///   - ringFlags: `.anyThread` (default) or `.threadPerCore` (fio's flags: fastest, but
    ///     the engine must stay on the creating thread).
    ///   - fixedBufferSlots: size of the sparse fixed-buffer table pools register into.
    ///   - fixedFileSlots: size of the sparse fixed-file table files register into when opened.
    public init(_ choice: Choice = .automatic, queueDepth: Int = 64, ringFlags: RingSetupFlags = .anyThread, fixedBufferSlots: Int = 1024, fixedFileSlots: Int = 256) throws(DirectIOError) {
        guard queueDepth > 0 && queueDepth <= 32_768 else {
            throw DirectIOError(.invalidArgument, operation: "create engine", detail: "queue depth \(queueDepth) is outside 1...32768")
        }
        var resolved = choice
        var notes: [String] = []
        if choice == .automatic, let forced = ProcessEnvironment.engineOverride {
            resolved = forced
            notes.append("engine chosen by DIRECTIO_ENGINE")
        }
        var backend: (any EngineBackend)? = nil
        if resolved != .blocking {
            do {
                let ring = try RingBackend(entries: UInt32(queueDepth), flags: ringFlags, fixedBufferSlots: fixedBufferSlots, fixedFileSlots: fixedFileSlots)
                notes += ring.registrationNotes
                backend = ring
            } catch {
                if resolved == .ioUring { throw error }
                notes.append("io_uring unavailable, using blocking system calls: \(error)")
            }
        }
        let chosen = backend ?? BlockingBackend(capacity: queueDepth)
        self.backend = chosen
        self.kind = chosen.kind
        self.ringFlags = (chosen as? RingBackend)?.ring.setupFlags
        self.notes = notes
        self.capacity = queueDepth
        self.ownerThread = ringFlags.contains(.singleIssuer) && chosen.kind == .ioUring ? pthread_self() : nil
        self.fixedSlots = FixedSlotAllocator(count: chosen.fixedBufferSlots)
        self.fileSlots = FixedSlotAllocator(count: chosen.fixedFileSlots)
        slots = .allocate(capacity: queueDepth)
        for index in 0..<queueDepth { (slots + index).initialize(to: Slot()) }
        freeSlots = (0..<Int32(queueDepth)).reversed()
        collected.reserveCapacity(queueDepth * 2)
        finishedBatch.reserveCapacity(queueDepth)
        reaping.reserveCapacity(queueDepth)
    }

    deinit {
        shutdown()
        for index in 0..<capacity { (slots + index).deinitialize(count: 1) }
        slots.deallocate()
    }

    /// Whether the engine's kernel interface supports `opcode`.
    public func supports(_ opcode: Opcode) -> Bool { backend.supports(opcode) }

    /// Requests submitted and not yet finished.
    public var inFlight: Int { capacity - freeSlots.count - finishedBatch.count }

    // MARK: Fixed buffers

    /// Registers `pool`'s buffers as fixed buffers, so I/O into them uses READ_FIXED and
    /// WRITE_FIXED and the kernel does not pin the pages per request. Refusal (no fixed-buffer
    /// table, RLIMIT_MEMLOCK) is not an error: the pool records why and works unregistered.
    @discardableResult
    public func register(_ pool: BufferPool) -> BufferPool.Registration {
        let id = ObjectIdentifier(pool)
        if let existing = pools[id] { return .registered(firstSlot: UInt16(existing.firstSlot)) }
        let outcome: BufferPool.Registration
        if backend.fixedBufferSlots == 0 {
            let why = kind == .blocking ? "the blocking engine has no fixed buffers"
                : notes.first { $0.contains("fixed-buffer") } ?? "this ring has no fixed-buffer table"
            outcome = .refused(why)
        } else if let first = fixedSlots.allocate(pool.count) {
            do {
                try backend.updateFixedBuffers(first: first, regions: pool.regions)
                pools[id] = (pool, first)
                outcome = .registered(firstSlot: UInt16(first))
            } catch {
                fixedSlots.release(first, pool.count)
                let bytes = pool.count * pool.bufferBytes
                let limit = Sys.memlockLimit().map { "\($0 / 1024) KiB" } ?? "unlimited"
                outcome = .refused("the kernel refused to pin \(bytes / 1024) KiB (io_uring_register BUFFERS_UPDATE: \(error)); RLIMIT_MEMLOCK is \(limit): raise `ulimit -l` or grant CAP_IPC_LOCK")
            }
        } else {
            outcome = .refused("the fixed-buffer table (\(backend.fixedBufferSlots) slots) has no room for \(pool.count) more buffers")
        }
        pool.setRegistration(outcome)
        return outcome
    }

    /// Removes `pool` from the fixed-buffer table. Requests in flight keep their pinned pages
    /// (the kernel holds a reference until they finish), so this is safe at any time.
    public func unregister(_ pool: BufferPool) {
        let id = ObjectIdentifier(pool)
        guard let entry = pools.removeValue(forKey: id) else { return }
        if lastPool?.id == id { lastPool = nil }
        let empty = [iovec](repeating: iovec(iov_base: nil, iov_len: 0), count: pool.count)
        // Clearing slots fails only if the ring is gone, and then the table is gone with it.
        _ = try? backend.updateFixedBuffers(first: entry.firstSlot, regions: empty)
        fixedSlots.release(entry.firstSlot, pool.count)
        pool.setRegistration(.unregistered)
    }

    /// The fixed-buffer slot holding pool buffer `slot`, when its pool is registered here.
    @inline(__always)
    func fixedIndex(of slot: PoolSlot?) -> UInt16? {
        guard let slot else { return nil }
        if let last = lastPool, last.id == slot.pool { return UInt16(last.firstSlot + slot.index) }
        guard let entry = pools[slot.pool] else { return nil }
        lastPool = (slot.pool, entry.firstSlot)
        return UInt16(entry.firstSlot + slot.index)
    }

    // MARK: Fixed files

    /// Puts `fd` in the ring's fixed-file table; returns its slot, or nil when there is no
    /// table or no free slot (requests then name the descriptor, which is only slower).
    func registerFile(_ fd: Int32) -> Int32? {
        guard let slot = fileSlots.allocate(1) else { return nil }
        do { try backend.updateFixedFiles(first: slot, fds: [fd]) } catch {
            fileSlots.release(slot, 1)
            return nil
        }
        return Int32(slot)
    }

    /// Hands every queued request to the kernel. Called before a descriptor is closed or its
    /// fixed-file slot emptied: a request still in the submission queue names the file only by
    /// number, and that number may belong to another file by the time it would be submitted.
    /// Once submitted, the kernel holds its own reference to the file.
    func submitBeforeClosing() {
        // An enter that fails here fails again at the next submit, which reports it.
        _ = try? backendSubmit(waitingFor: 0)
    }

    /// Empties fixed-file slot `slot`. Requests in flight that name it keep their own
    /// reference to the file, so this is safe at any time.
    func unregisterFile(slot: Int32) {
        // Fails only if the ring is gone, and then its table is gone with it.
        _ = try? backend.updateFixedFiles(first: Int(slot), fds: [-1])
        fileSlots.release(Int(slot), 1)
    }

    // MARK: Synchronous requests

    /// Runs one request to completion and returns its outcome. The memory the operation names
    /// must stay valid until this returns, which it does only after the final completion.
    func perform(_ operation: IOOperation, blockBytes: Int = 1) throws(DirectIOError) -> IOOutcome {
        let index = try start(operation, tag: 0, buffer: nil, blockBytes: blockBytes, batched: false)
        while slots[index].state != .finished {
            try wait(minimum: 1)
        }
        let outcome = slots[index].outcome
        release(index)
        return outcome
    }

    // MARK: Batched requests

    /// Starts a request that owns `buffer` until it completes; `reap` hands both back.
    func submit(_ operation: IOOperation, tag: UInt64, buffer: consuming PoolBuffer?, blockBytes: Int) throws(DirectIOError) {
        _ = try start(operation, tag: tag, buffer: buffer, blockBytes: blockBytes, batched: true)
    }

    /// Submits everything queued without waiting.
    public func flush() throws(DirectIOError) {
        try checkThread()
        try backendSubmit(waitingFor: 0)
    }

    /// Waits until at least `minimum` batched requests have finished (fewer if fewer are in
    /// flight), then hands up to `maximum` finished ones to `body`, in completion order; the
    /// rest wait for the next call.
    ///
    /// Each call makes one io_uring_enter that both submits what is queued and, when nothing
    /// has finished yet, waits for a completion. With `maximum: 1` and a resubmission from
    /// `body`, every new request reaches the kernel one enter after its predecessor finished:
    /// fio's pattern (iodepth_batch_submit=1), which keeps the device's queue full. Larger
    /// maximums batch more work per system call at the cost of submitting later.
    @discardableResult
    public func reap(minimum: Int = 1, maximum: Int = .max, _ body: (consuming IOCompletion) -> Void) throws(DirectIOError) -> Int {
        try checkThread()
        let wanted = min(minimum, finishedBatch.count + batchedInFlight)
        if finishedBatch.count >= wanted {
            // Enough is ready: still hand queued requests to the kernel and collect what has
            // completed, without blocking.
            try wait(minimum: 0)
        }
        while finishedBatch.count < wanted {
            try wait(minimum: 1)
        }
        guard !finishedBatch.isEmpty && maximum > 0 else { return 0 }
        // `body` may submit (and so finish) more requests: it sees a fresh `finishedBatch`.
        let count = min(maximum, finishedBatch.count)
        reaping.append(contentsOf: finishedBatch[0..<count])
        finishedBatch.removeFirst(count)
        defer { reaping.removeAll(keepingCapacity: true) }
        for index in reaping {
            let slot = slots + Int(index)
            let completion = IOCompletion(
                tag: slot.pointee.tag, opcode: slot.pointee.originalOpcode, offset: slot.pointee.startOffset,
                outcome: slot.pointee.outcome, buffer: slot.pointee.buffer.take())
            release(Int(index))
            body(completion)
        }
        return count
    }

    /// Asks the kernel to cancel every batched request submitted with `tag`. Each still
    /// completes through `reap`, with ECANCELED if the cancellation won, or its real result if
    /// it finished first: exactly one outcome per request, and its buffer comes back only then.
    public func cancel(tag: UInt64) throws(DirectIOError) {
        try checkThread()
        for index in 0..<capacity where slots[index].state == .inFlight && slots[index].batched && slots[index].tag == tag {
            try requestCancel(index)
        }
        try backendSubmit(waitingFor: 0)
    }

    // MARK: Shutdown

    /// Cancels everything in flight and waits for every completion. Called by `deinit`; calling
    /// it earlier drops batched results that have not been reaped (their buffers return to
    /// their pools).
    public func shutdown() {
        for index in 0..<capacity where slots[index].state == .inFlight && !slots[index].cancelRequested {
            // Cancellation is best effort; the wait below is what guarantees safety.
            _ = try? requestCancel(index)
        }
        while inFlight > 0 || pendingCancels > 0 {
            do { try wait(minimum: 1) } catch {
                // io_uring_enter fails here only if the ring is unusable (a wrong thread under
                // SINGLE_ISSUER). The kernel may still own buffers, so keep them forever rather
                // than risk freeing memory it writes: leak the slots and their pools.
                leakInFlightForever()
                return
            }
        }
        for index in finishedBatch { release(Int(index)) }
        finishedBatch.removeAll()
        pools.removeAll()
        lastPool = nil
    }

    // MARK: Request state

    private func start(_ operation: IOOperation, tag: UInt64, buffer: consuming PoolBuffer?, blockBytes: Int, batched: Bool) throws(DirectIOError) -> Int {
        try checkThread()
        while freeSlots.isEmpty {
            // Every slot is busy: wait for one to finish. Batched requests that finish stay
            // reserved until reaped, so a caller who never reaps cannot be helped here.
            if batchedInFlight == 0 && !finishedBatch.isEmpty && inFlight == 0 {
                throw DirectIOError(.wouldBlock, operation: "submit", detail: "all \(capacity) request slots hold finished requests: reap before submitting more")
            }
            try wait(minimum: 1)
        }
        let index = Int(freeSlots.removeLast())
        let slot = slots + index
        slot.pointee.begin(operation: operation, tag: tag, buffer: buffer, blockBytes: blockBytes, batched: batched)
        if batched { batchedInFlight += 1 }
        statistics.submitted += 1
        if operation.opcode == .readFixed || operation.opcode == .writeFixed { statistics.fixedBufferRequests += 1 }
        if operation.fileSlot >= 0 { statistics.fixedFileRequests += 1 }
        try enqueue(index)
        return index
    }

    /// Queues slot `index`'s current operation, submitting first if the SQ is full.
    private func enqueue(_ index: Int) throws(DirectIOError) {
        let userData = slots[index].userData(index: index)
        while !backend.enqueue(slots[index].operation, userData: userData) {
            try backendSubmit(waitingFor: 0)
            collect()
        }
    }

    private func requestCancel(_ index: Int) throws(DirectIOError) {
        slots[index].cancelRequested = true
        let target = slots[index].userData(index: index)
        while !backend.enqueueCancel(target: target, userData: target | Slot.cancelMarker) {
            try backendSubmit(waitingFor: 0)
            collect()
        }
        pendingCancels += 1
    }

    /// Submits, waits for `minimum` completions, and processes everything that arrived.
    private func wait(minimum: Int) throws(DirectIOError) {
        try backendSubmit(waitingFor: minimum)
        collect()
        try process()
    }

    private func backendSubmit(waitingFor minimum: Int) throws(DirectIOError) {
        do { try backend.submit(waitingFor: minimum) } catch {
            throw .system(error, operation: "submit I/O", call: kind == .ioUring ? "io_uring_enter" : "system call")
        }
    }

    /// Moves ready completions out of the kernel's queue without acting on them: acting may
    /// queue new requests, which must not happen while the completion queue is being read.
    private func collect() {
        _ = backend.reap { collected.append($0) }
    }

    private func process() throws(DirectIOError) {
        var next = 0
        while next < collected.count {
            let completion = collected[next]
            next += 1
            try handle(completion)
        }
        collected.removeAll(keepingCapacity: true)
    }

    private func handle(_ completion: RawCompletion) throws(DirectIOError) {
        if completion.userData & Slot.cancelMarker != 0 {
            // The cancel request's own completion (0, -ENOENT or -EALREADY): the outcome that
            // matters arrives as the target's completion.
            pendingCancels -= 1
            return
        }
        let index = Int(truncatingIfNeeded: completion.userData & 0xffff_ffff)
        let slot = slots + index
        // A completion always names a slot in flight with the same generation; anything else
        // would be a kernel bug, and ignoring it keeps a stale result from landing anywhere.
        guard index < capacity, slot.pointee.state == .inFlight,
              slot.pointee.userData(index: index) == completion.userData else { return }
        statistics.completions += 1
        let step = CompletionRule.step(
            opcode: slot.pointee.operation.opcode, result: completion.result, done: slot.pointee.done,
            remaining: slot.pointee.operation.byteCount, retries: slot.pointee.retries, blockBytes: slot.pointee.blockBytes)
        switch step {
        case .retry where !slot.pointee.cancelRequested:
            slot.pointee.retries += 1
            statistics.retries += 1
            try enqueue(index)
        case .resubmitRemainder(let bytes) where !slot.pointee.cancelRequested:
            slot.pointee.operation = slot.pointee.operation.advanced(by: bytes - slot.pointee.done)
            slot.pointee.done = bytes
            statistics.resubmissions += 1
            try enqueue(index)
        case .retry:
            finish(index, IOOutcome(bytes: slot.pointee.done, errno: Errno(rawValue: -completion.result)))
        case .resubmitRemainder(let bytes), .finished(let bytes):
            finish(index, IOOutcome(bytes: bytes, errno: nil))
        case .failed(let code, let bytes):
            finish(index, IOOutcome(bytes: bytes, errno: Errno(rawValue: code)))
        }
    }

    private func finish(_ index: Int, _ outcome: IOOutcome) {
        slots[index].state = .finished
        slots[index].outcome = outcome
        if slots[index].batched {
            batchedInFlight -= 1
            finishedBatch.append(Int32(index))
        }
    }

    private func release(_ index: Int) {
        slots[index].reset()
        freeSlots.append(Int32(index))
    }

    private func checkThread() throws(DirectIOError) {
        // pthread_self reads thread-local storage: no system call on the submission path.
        if let ownerThread, pthread_equal(ownerThread, pthread_self()) == 0 {
            throw DirectIOError(.invalidArgument, operation: "use engine", detail: "this engine's ring was created with SINGLE_ISSUER on another thread, and the kernel accepts requests only from that thread; create the engine with RingSetupFlags.anyThread to share it between threads")
        }
    }

    private func leakInFlightForever() {
        // Retain the slot table (and, through it, every buffer and pool) past the engine's life.
        let leaked = slots
        slots = .allocate(capacity: capacity)
        for index in 0..<capacity { (slots + index).initialize(to: Slot()) }
        _ = Unmanaged.passRetained(LeakedSlots(leaked))
    }
}

/// Keeps a slot table alive forever when the kernel may still own its buffers.
private final class LeakedSlots {
    let slots: UnsafeMutablePointer<Slot>
    init(_ slots: UnsafeMutablePointer<Slot>) { self.slots = slots }
}

/// Counters of what an engine has done.
public struct EngineStatistics: Sendable, Equatable {
    public var submitted = 0
    public var completions = 0
    /// Requests submitted again whole after EAGAIN or EINTR.
    public var retries = 0
    /// Remainders submitted after short transfers.
    public var resubmissions = 0
    /// Requests that used registered buffers (READ_FIXED/WRITE_FIXED).
    public var fixedBufferRequests = 0
    /// Requests that named their file by fixed-file slot.
    public var fixedFileRequests = 0
}

/// The engine's record of one request.
struct Slot: ~Copyable {
    enum State { case free, inFlight, finished }
    /// Set in the user data of ASYNC_CANCEL requests, so their completions are told apart.
    static let cancelMarker: UInt64 = 1 << 63

    var state = State.free
    var generation: UInt32 = 0
    var batched = false
    var cancelRequested = false
    var operation = IOOperation.nop()
    var originalOpcode = Opcode.nop
    var startOffset: Int64 = 0
    var tag: UInt64 = 0
    var done = 0
    var retries = 0
    var blockBytes = 1
    var outcome = IOOutcome(bytes: 0, errno: nil)
    /// The buffer a batched request owns until it is reaped.
    var buffer: PoolBuffer? = nil

    /// Slot index in the low 32 bits, generation above it (bit 63 stays clear for cancels).
    func userData(index: Int) -> UInt64 {
        UInt64(generation & 0x7fff_ffff) << 32 | UInt64(index)
    }

    mutating func begin(operation: IOOperation, tag: UInt64, buffer: consuming PoolBuffer?, blockBytes: Int, batched: Bool) {
        state = .inFlight
        generation &+= 1
        self.batched = batched
        cancelRequested = false
        self.operation = operation
        originalOpcode = operation.opcode
        startOffset = operation.offset
        self.tag = tag
        done = 0
        retries = 0
        self.blockBytes = blockBytes
        self.buffer = buffer
    }

    mutating func reset() {
        state = .free
        buffer = nil
    }
}

/// Hands out contiguous ranges of fixed-buffer slots (first fit; pools are few and long-lived).
struct FixedSlotAllocator {
    private var free: [Range<Int>]

    init(count: Int) { free = count > 0 ? [0..<count] : [] }

    mutating func allocate(_ count: Int) -> Int? {
        guard let at = free.firstIndex(where: { $0.count >= count }) else { return nil }
        let range = free[at]
        free[at] = range.lowerBound + count..<range.upperBound
        if free[at].isEmpty { free.remove(at: at) }
        return range.lowerBound
    }

    mutating func release(_ first: Int, _ count: Int) {
        free.append(first..<first + count)
        free.sort { $0.lowerBound < $1.lowerBound }
        var merged: [Range<Int>] = []
        for range in free {
            if let last = merged.last, last.upperBound == range.lowerBound {
                merged[merged.count - 1] = last.lowerBound..<range.upperBound
            } else {
                merged.append(range)
            }
        }
        free = merged
    }
}

/// Settings read from the environment.
enum ProcessEnvironment {
    /// DIRECTIO_ENGINE=blocking|io_uring forces an engine for `.automatic` (tests, and users
    /// whose sandbox allows io_uring_setup but breaks later calls).
    static var engineOverride: IOEngine.Choice? {
        guard let raw = getenv("DIRECTIO_ENGINE") else { return nil }
        switch String(cString: raw).lowercased() {
        case "blocking", "sync", "psync": return .blocking
        case "io_uring", "iouring", "uring": return .ioUring
        default: return nil
        }
    }
}
