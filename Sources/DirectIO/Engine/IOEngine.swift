import CDirectIO
import CoreMetrics
import Logging
import Glibc
import SystemPackage

/// Moves requests between DirectIO and the kernel: io_uring where the kernel allows it,
/// blocking system calls where it does not, with identical results either way.
/// On a ring, the writes and syncs of a synchronous call still go as system calls on the
/// caller's thread, which completes them sooner (`EngineStatistics.systemCallRequests`).
///
/// The engine owns the state of every request in flight: it retries EAGAIN and EINTR,
/// resubmits the remainder of short transfers, reports EOF as a short count, and holds the
/// buffer of every batched request until that request's final completion has been reaped.
/// Dropping the engine cancels what is still in flight and waits for the kernel to finish with
/// it before any buffer is released.
///
/// An engine is used by one thread at a time (it is not `Sendable`); with
/// `threadPerCore: true` it must stay on the thread that created it.
public final class IOEngine {
    package let kind: EngineKind
    /// Ring setup flags the kernel accepted; nil for the blocking engine.
    package let ringFlags: RingSetupFlags?
    /// Why the blocking engine serves an `.automatic` request, or why fixed buffers are off.
    public let notes: [String]
    /// Requests that may be in flight at once.
    public let capacity: Int

    let backend: any EngineBackend
    /// Request state, behind a pointer: see `RequestTable`.
    private let table: UnsafeMutablePointer<RequestTable>
    /// Fixed-buffer and fixed-file registrations, behind a pointer for the same reason.
    private let registry: UnsafeMutablePointer<Registry>
    private let ownerThread: UInt?
    /// Where limitations and fallbacks are said (`init`'s `logger`).
    package let logger: Logger?

    private struct Registry {
        var bufferSlots: FixedSlotAllocator
        var fileSlots: FixedSlotAllocator
        /// Each open descriptor's fixed-file slot, by descriptor number: 0 not yet asked,
        /// slot + 1, or -1 when there was no table or no free slot.
        var descriptorSlots: [Int32] = []
        var pools: [ObjectIdentifier: (pool: BufferPool, firstSlot: Int)] = [:]
        /// The pool looked up last: one comparison per request in the common one-pool case.
        var lastPool: (id: ObjectIdentifier, firstSlot: Int)? = nil
        /// Set when the kernel may still own buffers that can never be reaped (see `shutdown`).
        var leaked = false
        /// The swift-metrics counters, made by the first `publishMetrics`.
        var metrics: EngineMetrics? = nil
    }

    /// The engine's bounce reserve for requests that break a file's alignment: made with the
    /// engine, so a caller waiting for a buffer waits for one that exists (the seed's
    /// emergency pool); registered where pinning is charged to no limit.
    let bouncePool: BufferPool
    /// Small bounce buffers (`Realignment.smallBounceBytes`), one per request slot, for
    /// requests whose covering blocks fit one: batched unaligned requests in flight each hold
    /// one. Nil for engines that never bounce (the runtime's rings use the runtime's).
    let smallBouncePool: BufferPool?
    static let bounceBufferBytes = 256 << 10
    /// Plans of finished realigned requests, planned into again (one per slot at most).
    let sparePlans: SparePlans

    /// Counts a synchronous transfer's bytes.
    func record(_ moved: TransferStatistics) {
        table.pointee.statistics.add(moved)
    }

    /// Counts a file that fell back to buffered I/O.
    func recordBufferedFallback() {
        table.pointee.statistics.bufferedFallbacks += 1
    }

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
    ///   - queueDepth: requests in flight at once. The ring gets twice as many SQEs (room for
    ///     each request and a cancellation of it) and four times as many CQEs, so neither
    ///     queue can ever be full.
    ///   - threadPerCore: set up the ring for one thread (SINGLE_ISSUER, DEFER_TASKRUN: fio's
    ///     flags, the fastest), which must then be the only one to use the engine; by default
    ///     any thread may, one at a time.
    ///   - fixedBufferSlots: size of the sparse fixed-buffer table pools register into.
    ///   - fixedFileSlots: size of the sparse fixed-file table files register into when opened.
    ///   - bounceBuffers: 256 KiB bounce buffers for unaligned requests, made now. A
    ///     synchronous call holds one at a time, so two serve one thread; files opened with
    ///     their own `bouncePool` share that one instead.
    ///   - logger: where the engine says, at info, what makes it slower than it could be: no
    ///     io_uring, tables the kernel refused, pools left unregistered, files that fell back
    ///     to the page cache (metadata keys `directio.*`). Nothing is logged per I/O.
    public convenience init(_ choice: Choice = .automatic, queueDepth: Int = 64, threadPerCore: Bool = false, fixedBufferSlots: Int = 1024, fixedFileSlots: Int = 256, bounceBuffers: Int = 2,
                            logger: Logger? = nil) throws(DirectIOError) {
        try self.init(choice, queueDepth: queueDepth, ringFlags: threadPerCore ? .threadPerCore : .anyThread, fixedBufferSlots: fixedBufferSlots, fixedFileSlots: fixedFileSlots, bounceBuffers: bounceBuffers, logger: logger, wrappingBackend: nil)
    }

    /// An engine with exactly these ring setup flags (tests, and the runtime's workers).
    package convenience init(_ choice: Choice = .automatic, queueDepth: Int = 64, ringFlags: RingSetupFlags, fixedBufferSlots: Int = 1024, fixedFileSlots: Int = 256, bounceBuffers: Int = 2) throws(DirectIOError) {
        try self.init(choice, queueDepth: queueDepth, ringFlags: ringFlags, fixedBufferSlots: fixedBufferSlots, fixedFileSlots: fixedFileSlots, bounceBuffers: bounceBuffers, wrappingBackend: nil)
    }

    /// Whether io_uring carries the requests (else blocking system calls; `notes` says why).
    public var usesIOUring: Bool { kind == .ioUring }

    /// An engine whose kernel-facing backend is wrapped (DirectIOTesting's fault injection).
    package init(_ choice: Choice, queueDepth: Int, ringFlags: RingSetupFlags, fixedBufferSlots: Int, fixedFileSlots: Int, bounceBuffers: Int = 2, smallBounceBuffers: Bool = true,
                 logger: Logger? = nil, wrappingBackend wrap: ((any EngineBackend) -> any EngineBackend)?) throws(DirectIOError) {
        guard queueDepth > 0 && queueDepth <= 16_384 else {
            throw DirectIOError(.invalidArgument, operation: "create engine", detail: "queue depth \(queueDepth) is outside 1...16384")
        }
        guard bounceBuffers >= 1 else {
            throw DirectIOError(.invalidArgument, operation: "create engine", detail: "at least one bounce buffer is needed (got \(bounceBuffers))")
        }
        bouncePool = try BufferPool.reserve(count: bounceBuffers, bufferBytes: Self.bounceBufferBytes)
        smallBouncePool = smallBounceBuffers ? try BufferPool.reserve(count: queueDepth, bufferBytes: Realignment.smallBounceBytes) : nil
        sparePlans = SparePlans(limit: queueDepth + 1)
        var resolved = choice
        var notes: [String] = []
        if choice == .automatic, let forced = ProcessEnvironment.engineOverride {
            resolved = forced
            notes.append("engine chosen by DIRECTIO_ENGINE")
        }
        var backend: (any EngineBackend)? = nil
        if resolved != .blocking {
            do {
                let ring = try RingBackend(entries: UInt32(queueDepth * 2), flags: ringFlags, fixedBufferSlots: fixedBufferSlots, fixedFileSlots: fixedFileSlots)
                notes += ring.registrationNotes
                backend = ring
            } catch {
                if resolved == .ioUring { throw error }
                notes.append("io_uring unavailable, using blocking system calls: \(error)")
            }
        }
        var chosen = backend ?? BlockingBackend(capacity: queueDepth * 2)
        if let wrap { chosen = wrap(chosen) }
        self.backend = chosen
        self.kind = chosen.kind
        self.ringFlags = ((backend ?? chosen) as? RingBackend)?.setupFlags
        self.notes = notes
        self.logger = logger
        self.capacity = queueDepth
        self.ownerThread = ringFlags.contains(.singleIssuer) && chosen.kind == .ioUring ? Sys.currentThread() : nil
        table = .allocate(capacity: 1)
        table.initialize(to: RequestTable(capacity: queueDepth, completionCapacity: chosen.completionCapacity))
        registry = .allocate(capacity: 1)
        registry.initialize(to: Registry(bufferSlots: FixedSlotAllocator(count: chosen.fixedBufferSlots), fileSlots: FixedSlotAllocator(count: chosen.fixedFileSlots)))
        if MemoryLimits.pinningIsFree {
            if let smallBouncePool { register(smallBouncePool) }
            register(bouncePool)
        }
        for note in notes {
            logger?.info("I/O engine set up with a limitation", metadata: ["directio.engine": "\(kind)", "directio.note": "\(note)"])
        }
    }

    deinit {
        shutdown()
        // When shutdown could not reap everything, the table (with the buffers the kernel may
        // still write) is kept forever rather than freed under the kernel's feet.
        if !registry.pointee.leaked {
            table.deinitialize(count: 1)
            table.deallocate()
        }
        registry.deinitialize(count: 1)
        registry.deallocate()
    }

    /// Whether the engine's kernel interface supports `opcode`.
    package func supports(_ opcode: Opcode) -> Bool { backend.supports(opcode) }

    /// Requests submitted and not yet finished.
    public var inFlight: Int { table.pointee.inFlight }

    /// Counters of what the engine has done.
    public var statistics: EngineStatistics { table.pointee.statistics }

    /// Adds what the engine has done since the last call to swift-metrics counters
    /// (`directio.requests`, `directio.bytes` by `path` direct/bounced/shifted, ...: the list is
    /// `EngineMetrics`'s) with the dimension `engine` = `label`, made on the first call, whose
    /// label and factory stay. The engine counts in plain integers on its hot path, so the
    /// backend costs nothing per I/O: call this from the engine's thread as often as the
    /// backend's resolution needs.
    public func publishMetrics(label: String, factory: any MetricsFactory = MetricsSystem.factory) {
        let metrics = registry.pointee.metrics ?? EngineMetrics(label: label, factory: factory)
        registry.pointee.metrics = metrics
        metrics.publish(table.pointee.statistics)
    }

    /// Registers the ring's descriptor with the calling thread, so each io_uring_enter skips
    /// the descriptor lookup (`IORing.registerDescriptor`). Only for an engine the calling
    /// thread alone uses and also drops (a runtime's ring worker, a benchmark's loop): the
    /// ring can then only be entered from this thread, and a ring dropped on another thread
    /// would stay open until this one exits. False where the kernel refuses or without a ring.
    package func registerRingDescriptor() -> Bool {
        (backend as? RingBackend)?.registerDescriptor() ?? false
    }

    // MARK: Fixed buffers

    /// Registers `pool`'s buffers as fixed buffers, so I/O into them uses READ_FIXED and
    /// WRITE_FIXED and the kernel does not pin the pages per request. Refusal (no fixed-buffer
    /// table, RLIMIT_MEMLOCK) is not an error: the pool records why and works unregistered.
    /// Returns whether the pool is registered; if not, its `description` says why.
    @discardableResult
    public func register(_ pool: BufferPool) -> Bool {
        if case .registered = registering(pool) { return true }
        return false
    }

    /// `register(_:)`, saying where the pool's slots start or why it was refused. With
    /// `shared`, the slots share the pages another ring has pinned for the pool (a runtime's
    /// `SharedFixedBuffers`) where the kernel can clone them, and pin them otherwise.
    package func registering(_ pool: BufferPool, shared: SharedFixedBuffers.Pinned? = nil) -> BufferPool.Registration {
        let id = ObjectIdentifier(pool)
        if let existing = registry.pointee.pools[id] { return .registered(firstSlot: UInt16(existing.firstSlot)) }
        let outcome: BufferPool.Registration
        if backend.fixedBufferSlots == 0 {
            let why = kind == .blocking ? "the blocking engine has no fixed buffers"
                : notes.first { $0.contains("fixed-buffer") } ?? "this ring has no fixed-buffer table"
            outcome = .refused(why)
        } else if let first = registry.pointee.bufferSlots.allocate(pool.count) {
            do {
                if let shared, (try? backend.cloneFixedBuffers(from: shared.ring, sourceFirst: shared.firstSlot, first: first, count: pool.count)) != nil {
                    table.pointee.statistics.poolsShared += 1
                } else {
                    try backend.updateFixedBuffers(first: first, regions: pool.regions)
                }
                registry.pointee.pools[id] = (pool, first)
                outcome = .registered(firstSlot: UInt16(first))
            } catch {
                registry.pointee.bufferSlots.release(first, pool.count)
                let bytes = pool.count * pool.bufferBytes
                let limit = Sys.memlockLimit().map { "\($0 / 1024) KiB" } ?? "unlimited"
                outcome = .refused("the kernel refused to pin \(bytes / 1024) KiB (io_uring_register BUFFERS_UPDATE: \(error)); RLIMIT_MEMLOCK is \(limit): raise `ulimit -l` or grant CAP_IPC_LOCK")
            }
        } else {
            outcome = .refused("the fixed-buffer table (\(backend.fixedBufferSlots) slots) has no room for \(pool.count) more buffers")
        }
        pool.setRegistration(outcome)
        if case .refused(let why) = outcome {
            logger?.info("buffer pool not registered: its I/O pins pages per request", metadata: [
                "directio.pool.buffers": "\(pool.count)", "directio.pool.buffer_bytes": "\(pool.bufferBytes)", "directio.reason": "\(why)"])
        }
        return outcome
    }

    /// Removes `pool` from the fixed-buffer table. Requests in flight keep their pinned pages
    /// (the kernel holds a reference until they finish), so this is safe at any time.
    public func unregister(_ pool: BufferPool) {
        let id = ObjectIdentifier(pool)
        guard let entry = registry.pointee.pools.removeValue(forKey: id) else { return }
        if registry.pointee.lastPool?.id == id { registry.pointee.lastPool = nil }
        let empty = [iovec](repeating: iovec(iov_base: nil, iov_len: 0), count: pool.count)
        // Clearing slots fails only if the ring is gone, and then the table is gone with it.
        _ = try? backend.updateFixedBuffers(first: entry.firstSlot, regions: empty)
        registry.pointee.bufferSlots.release(entry.firstSlot, pool.count)
        pool.setRegistration(.unregistered)
    }

    /// The fixed-buffer slot holding pool buffer `slot`, when its pool is registered here.
    @inline(__always)
    func fixedIndex(of slot: PoolSlot?) -> UInt16? {
        guard let slot else { return nil }
        if let last = registry.pointee.lastPool, last.id == slot.pool { return UInt16(last.firstSlot + slot.index) }
        guard let entry = registry.pointee.pools[slot.pool] else { return nil }
        registry.pointee.lastPool = (slot.pool, entry.firstSlot)
        return UInt16(entry.firstSlot + slot.index)
    }

    /// The fixed-buffer slot whose registered memory holds all of [address, address + length),
    /// for caller memory that happens to lie in a registered pool buffer (a scan of the
    /// registered pools: there are few).
    func fixedIndex(containing address: UnsafeRawPointer, length: Int) -> UInt16? {
        let start = UInt(bitPattern: address)
        for (_, entry) in registry.pointee.pools {
            let pool = entry.pool
            let base = UInt(bitPattern: pool.address(of: 0))
            guard start >= base, start < base + UInt(pool.count * pool.bufferBytes) else { continue }
            let index = Int(start - base) / pool.bufferBytes
            let bufferEnd = base + UInt((index + 1) * pool.bufferBytes)
            return start + UInt(length) <= bufferEnd ? UInt16(entry.firstSlot + index) : nil
        }
        return nil
    }

    // MARK: Fixed files

    /// The fixed-file slot of descriptor `fd`, put in the ring's table when first asked with
    /// `registering` (else -1, and nothing recorded): the one table every file on this engine
    /// is named through (a `DirectFile` asks when it opens, an `AsyncFile` from its second
    /// request on). -1 also when there is no table or no free slot: requests then name the
    /// descriptor, which is only slower. Safe because a registered descriptor leaves the table
    /// before it is closed (`forgetFile`), so a slot never outlives its file and a reused
    /// number starts afresh. A file that never asks with `registering` may close without
    /// `forgetFile`: this table holds nothing of it.
    func fileSlot(for fd: Int32, registering: Bool = true) -> Int32 {
        let index = Int(fd)
        guard index >= 0 else { return -1 }
        if index < registry.pointee.descriptorSlots.count {
            let known = registry.pointee.descriptorSlots[index]
            if known != 0 { return known > 0 ? known - 1 : -1 }
        } else {
            registry.pointee.descriptorSlots.append(contentsOf: repeatElement(0, count: index + 1 - registry.pointee.descriptorSlots.count))
        }
        guard registering else { return -1 }
        var slot: Int32 = -1
        if let free = registry.pointee.fileSlots.allocate(1) {
            do {
                try backend.updateFixedFiles(first: free, fds: [fd])
                slot = Int32(free)
            } catch {
                registry.pointee.fileSlots.release(free, 1)
            }
        }
        registry.pointee.descriptorSlots[index] = slot >= 0 ? slot + 1 : -1
        return slot
    }

    /// Drops `fd` from the fixed-file table before its file closes it: queued requests are
    /// handed to the kernel first (`submitBeforeClosing`); those in flight keep their own
    /// reference to the file, so this is safe at any time.
    func forgetFile(_ fd: Int32) {
        submitBeforeClosing()
        let index = Int(fd)
        guard index >= 0, index < registry.pointee.descriptorSlots.count else { return }
        let known = registry.pointee.descriptorSlots[index]
        registry.pointee.descriptorSlots[index] = 0
        guard known > 0 else { return }
        // Fails only if the ring is gone, and then its table is gone with it.
        _ = try? backend.updateFixedFiles(first: Int(known - 1), fds: [-1])
        registry.pointee.fileSlots.release(Int(known - 1), 1)
    }

    /// Hands every queued request to the kernel. Called before a descriptor is closed or its
    /// fixed-file slot emptied: a request still in the submission queue names the file only by
    /// number, and that number may belong to another file by the time it would be submitted.
    /// Once submitted, the kernel holds its own reference to the file.
    func submitBeforeClosing() {
        // An enter that fails here fails again at the next submit, which reports it.
        _ = try? backendSubmit(waitingFor: 0)
    }

    // MARK: Synchronous requests

    /// Runs one request to completion and returns its outcome. The memory the operation names
    /// must stay valid until this returns, which it does only after the final completion.
    /// The backend may run it at once as a system call (`EngineBackend.enqueueWaited`).
    func perform(_ operation: IOOperation, blockBytes: Int = 1) throws(DirectIOError) -> IOOutcome {
        let index = try start(operation, tag: 0, buffer: nil, blockBytes: blockBytes, batched: false, waited: true)
        return finish(index)
    }

    /// Runs two independent requests together and returns both outcomes, in order, once both
    /// have their final completion: one io_uring_enter submits both, and the device overlaps
    /// them (the two edge-block reads of a read-modify-write cost one round trip, not two).
    /// Allocates nothing.
    func perform(_ first: IOOperation, _ second: IOOperation, blockBytes: Int = 1) throws(DirectIOError) -> (IOOutcome, IOOutcome) {
        // With fewer than two free slots the second start would wait for the first's slot,
        // which only `finish` gives back: one after the other then.
        if table.pointee.freeCount < 2 {
            let firstOutcome = try perform(first, blockBytes: blockBytes)
            return (firstOutcome, try perform(second, blockBytes: blockBytes))
        }
        let firstIndex = try start(first, tag: 0, buffer: nil, blockBytes: blockBytes, batched: false)
        let secondIndex: Int
        do { secondIndex = try start(second, tag: 0, buffer: nil, blockBytes: blockBytes, batched: false) } catch {
            // The first request may be using the caller's memory: see it finish first.
            _ = finish(firstIndex)
            throw error
        }
        // Waiting for one reaps whatever else completes, so the second is usually done by then.
        return (finish(firstIndex), finish(secondIndex))
    }

    /// Waits for the final completion of synchronous request `index`, releases its slot and
    /// returns its outcome.
    private func finish(_ index: Int) -> IOOutcome {
        var cancelled = false
        var backoff = EnterBackoff()
        while table.pointee.slots[index].state != .finished {
            do { try wait(minimum: 1) } catch {
                // The kernel may be reading or writing the caller's memory: this call must not
                // return before the request's final completion, whatever io_uring_enter says
                // (`EnterBackoff`: ask for cancellation, pause, try again).
                if !cancelled {
                    cancelled = true
                    try? requestCancel(index)
                }
                backoff.pauseAfterFailure()
            }
        }
        let outcome = table.pointee.slots[index].outcome
        table.pointee.release(index)
        return outcome
    }

    // MARK: Batched requests

    /// Starts a request that owns `buffer` until it completes; `reap` hands both back.
    /// - Parameter counters: the direct file's counters; the request's bytes count as direct.
    func submit(_ operation: IOOperation, tag: UInt64, buffer: consuming PoolBuffer?, blockBytes: Int, shift: Shift? = nil, counters: TransferCounters? = nil) throws(DirectIOError) {
        let index = try start(operation, tag: tag, buffer: buffer, blockBytes: blockBytes, batched: true)
        table.pointee.slots[index].shift = shift
        table.pointee.slots[index].counters = counters
    }

    /// Starts a batched request the realignment layer carries out in steps (`RealignedRequest`):
    /// its first device request now, each next one when the previous completes, and one
    /// completion for the caller, with `buffer`, at the end.
    func submitRealigned(_ parts: consuming RealignedRequest.Parts, buffer: consuming PoolBuffer, tag: UInt64) throws(DirectIOError) {
        let request: RealignedRequest
        if let spare = table.pointee.popSpareRealigned() {
            spare.reuse(for: parts)
            request = spare
        } else {
            request = RealignedRequest(parts)
        }
        let first: IOOperation
        switch request.advance(after: nil, cancelled: false, engine: self) {
        case .submit(let operation): first = operation
        case .ended(let outcome, _):
            // Nothing reached the kernel: say why at once.
            throw DirectIOError.system(outcome.errno ?? .ioError, operation: "submit realigned request", call: "plan", offset: request.offset)
        }
        let index: Int
        do { index = try start(first, tag: tag, buffer: buffer, blockBytes: request.blockBytes(of: first), batched: true) } catch {
            request.release()
            throw error
        }
        let slot = table.pointee.slots + index
        slot.pointee.realigned = request
        slot.pointee.startOffset = request.offset
        slot.pointee.originalOpcode = request.isRead ? .read : .write
        table.pointee.realignedInFlight += 1
    }

    // MARK: Async requests (the runtime's rings)

    /// Starts an async request: its slot is its one record (the worker keeps none), and its
    /// task is resumed with the final outcome when that completion is handled; the slot is
    /// free again at once. The caller checks `hasFreeSlot` first (a ring's thread must not
    /// wait for a slot). Returns the request's user data, for `cancel(userData:)`.
    func submit(_ operation: IOOperation, resuming waiter: AsyncRequest, blockBytes: Int) throws(DirectIOError) -> UInt64 {
        let index = try start(operation, tag: 0, buffer: nil, blockBytes: blockBytes, batched: false)
        let slot = table.pointee.slots + index
        slot.pointee.waiter = waiter
        table.pointee.waitersInFlight += 1
        return slot.pointee.userData(index: index)
    }

    var hasFreeSlot: Bool { table.pointee.freeCount > 0 }
    /// Async requests in the kernel.
    var waitersInFlight: Int { table.pointee.waitersInFlight }

    /// Asks the kernel to cancel the async request with `userData`, if it is still in flight
    /// (it then completes with ECANCELED, or with its real result if it finished first).
    func cancel(userData: UInt64) {
        let index = Int(truncatingIfNeeded: userData & 0xffff_ffff)
        guard index < capacity else { return }
        let slot = table.pointee.slots + index
        guard slot.pointee.state == .inFlight, slot.pointee.waiter != nil, slot.pointee.userData(index: index) == userData, !slot.pointee.cancelRequested else { return }
        _ = try? requestCancel(index)
    }

    /// Asks the kernel to cancel every async request in flight that `matches`.
    func cancelWaiters(where matches: (AsyncRequest) -> Bool) {
        for index in 0..<capacity {
            let slot = table.pointee.slots + index
            guard slot.pointee.state == .inFlight, !slot.pointee.cancelRequested, let waiter = slot.pointee.waiter, matches(waiter) else { continue }
            _ = try? requestCancel(index)
        }
    }

    /// One round of a ring's thread: submits what is queued, waits for a completion when
    /// `block` (and none is ready), and acts on at most `limit` of those that arrived: async
    /// requests' tasks are resumed, realigned steps go on, and finished batched requests are
    /// handed to `body`.
    func service(block: Bool, limit: Int, _ body: (consuming IOCompletion) -> Void) throws(DirectIOError) {
        try wait(minimum: block && table.pointee.finishedCount == 0 ? 1 : 0, limit: limit)
        while let completion = takeFinished() { body(completion) }
    }

    /// Whether batched requests of this engine hold block locks: a caller about to wait for a
    /// lock or a bounce buffer must then let them progress (`progress()`), since only this
    /// thread reaps them.
    var holdsRealignedRequests: Bool { table.pointee.realignedInFlight > 0 }

    /// Waits for at least one completion and acts on it (the next step of a realigned request,
    /// or a finished request that `reap` will hand out).
    func progress() throws(DirectIOError) {
        try wait(minimum: 1)
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
        let wanted = min(minimum, table.pointee.finishedCount + table.pointee.batchedInFlight)
        if table.pointee.finishedCount >= wanted {
            // Enough is ready: still hand queued requests to the kernel and collect what has
            // completed, without blocking.
            try wait(minimum: 0)
        }
        while table.pointee.finishedCount < wanted {
            try wait(minimum: 1)
        }
        var handed = 0
        // `body` may submit more requests: each completion is taken out of the table before
        // `body` runs, so the table is never being changed while `body` changes it too.
        while handed < maximum, let completion = takeFinished() {
            handed += 1
            body(completion)
        }
        return handed
    }

    private func takeFinished() -> IOCompletion? {
        guard let index = table.pointee.popFinished() else { return nil }
        let slot = table.pointee.slots + index
        var outcome = slot.pointee.outcome
        var buffer = slot.pointee.buffer.take()
        var offset = slot.pointee.startOffset
        var moved = TransferStatistics()
        if let shift = slot.pointee.shift, let base = buffer?.baseAddress {
            // The kernel is done with the buffer: slide the caller's bytes into place.
            outcome.bytes = shift.apply(to: base, deviceBytes: outcome.bytes)
            offset += Int64(shift.isRead ? shift.deviceOffset : 0)
            moved.bytesShifted = shift.isRead ? outcome.bytes : shift.count
        }
        if let counters = slot.pointee.counters {
            moved.bytesDirect = outcome.bytes
            counters.totals.add(moved)
            table.pointee.statistics.add(moved)
        }
        let completion = IOCompletion(
            tag: slot.pointee.tag, opcode: slot.pointee.originalOpcode, offset: offset,
            outcome: outcome, buffer: buffer.take())
        table.pointee.release(index)
        return completion
    }

    /// Asks the kernel to cancel every batched request submitted with `tag`. Each still
    /// completes through `reap`, with ECANCELED if the cancellation won, or its real result if
    /// it finished first: exactly one outcome per request, and its buffer comes back only then.
    public func cancel(tag: UInt64) throws(DirectIOError) {
        try checkThread()
        let slots = table.pointee.slots
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
        // An earlier shutdown already gave up on a broken ring: its buffers stay kept.
        guard !registry.pointee.leaked else { return }
        let slots = table.pointee.slots
        for index in 0..<capacity where slots[index].state == .inFlight && !slots[index].cancelRequested {
            // Cancellation is best effort; the wait below is what guarantees safety.
            _ = try? requestCancel(index)
        }
        var backoff = EnterBackoff()
        while table.pointee.inFlight > 0 || table.pointee.pendingCancels > 0 {
            do {
                try wait(minimum: 1)
                backoff.reset()
            } catch {
                // `EnterBackoff`: nobody waits for these requests, so after a while their
                // buffers are kept forever rather than freed under a kernel that may write them.
                guard backoff.waited >= EnterBackoff.shutdownPatience else {
                    backoff.pauseAfterFailure()
                    continue
                }
                registry.pointee.leaked = true
                table.pointee.statistics.buffersKept += (0..<capacity).reduce(0) { $0 + (slots[$1].state == .inFlight && slots[$1].buffer != nil ? 1 : 0) }
                return
            }
        }
        while let index = table.pointee.popFinished() { table.pointee.release(index) }
        registry.pointee.pools.removeAll()
        registry.pointee.lastPool = nil
    }

    // MARK: Request state

    private func start(_ operation: IOOperation, tag: UInt64, buffer: consuming PoolBuffer?, blockBytes: Int, batched: Bool, waited: Bool = false) throws(DirectIOError) -> Int {
        try checkThread()
        // While the ring cannot be entered, a new request is refused before it reaches the
        // queue (`EnterBackoff`); one try tells whether that is still so.
        if table.pointee.enterFailure != nil { try backendSubmit(waitingFor: 0) }
        while table.pointee.freeCount == 0 {
            // Every slot is busy: wait for one to finish. Batched requests that finish stay
            // reserved until reaped, so a caller who never reaps cannot be helped here.
            if table.pointee.inFlight == 0 {
                throw DirectIOError(.wouldBlock, operation: "submit", detail: "all \(capacity) request slots hold finished requests: reap before submitting more")
            }
            try wait(minimum: 1)
        }
        guard let index = table.pointee.takeFreeSlot() else {
            throw DirectIOError(.wouldBlock, operation: "submit", detail: "no free request slot")
        }
        // Through a pointer to the slot: `table.pointee.slots[index].begin(...)` makes Swift 6.3's
        // ThreadSanitizer instrumentation emit invalid IR ("Invalid bitcast i64 to ptr").
        let slot = table.pointee.slots + index
        slot.pointee.begin(operation: operation, tag: tag, buffer: buffer, blockBytes: blockBytes, batched: batched)
        if batched { table.pointee.batchedInFlight += 1 }
        table.pointee.statistics.submitted += 1
        if operation.opcode == .readFixed || operation.opcode == .writeFixed { table.pointee.statistics.fixedBufferRequests += 1 }
        if operation.fileSlot >= 0 { table.pointee.statistics.fixedFileRequests += 1 }
        do { try enqueue(index, waited: waited) } catch {
            // It never reached the submission queue, so the kernel never saw its memory.
            if batched { table.pointee.batchedInFlight -= 1 }
            table.pointee.release(index)
            throw error
        }
        return index
    }

    /// Queues slot `index`'s current operation. The SQ has room for every slot's request and
    /// a cancellation of it, so it is never full here; the loop is a guard, not a path.
    /// `waited`: the caller blocks until it completes (`perform`).
    private func enqueue(_ index: Int, waited: Bool = false) throws(DirectIOError) {
        let slot = table.pointee.slots + index
        let userData = slot.pointee.userData(index: index)
        while !(waited ? backend.enqueueWaited(slot.pointee.operation, userData: userData) : backend.enqueue(slot.pointee.operation, userData: userData)) {
            try backendSubmit(waitingFor: 0)
        }
    }

    private func requestCancel(_ index: Int) throws(DirectIOError) {
        table.pointee.slots[index].cancelRequested = true
        let target = table.pointee.slots[index].userData(index: index)
        while !backend.enqueueCancel(target: target, userData: target | Slot.cancelMarker) {
            try backendSubmit(waitingFor: 0)
        }
        table.pointee.pendingCancels += 1
    }

    /// Submits, waits for `minimum` completions, and acts on everything that arrived (at most
    /// `limit`; the rest stay in the kernel's queue for the next call).
    private func wait(minimum: Int, limit: Int = .max) throws(DirectIOError) {
        try backendSubmit(waitingFor: minimum)
        let room = min(limit, table.pointee.collectedCapacity - table.pointee.collectedCount)
        table.pointee.collectedCount += backend.reap(into: table.pointee.collected + table.pointee.collectedCount, limit: room)
        var next = 0
        while next < table.pointee.collectedCount {
            let completion = table.pointee.collected[next]
            next += 1
            handle(completion)
        }
        table.pointee.collectedCount = 0
    }

    private func backendSubmit(waitingFor minimum: Int) throws(DirectIOError) {
        do { try backend.submit(waitingFor: minimum) } catch {
            let failure = DirectIOError.system(error, operation: "submit I/O", call: kind == .ioUring ? "io_uring_enter" : "system call",
                                               detail: "the ring cannot be entered; new requests are refused until it can, and requests already in it keep their memory")
            table.pointee.statistics.enterFailures += 1
            table.pointee.enterFailure = failure
            throw failure
        }
        table.pointee.enterFailure = nil
    }

    private func handle(_ completion: RawCompletion) {
        if completion.userData & Slot.cancelMarker != 0 {
            // The cancel request's own completion (0, -ENOENT or -EALREADY): the outcome that
            // matters arrives as the target's completion.
            table.pointee.pendingCancels -= 1
            return
        }
        let index = Int(truncatingIfNeeded: completion.userData & 0xffff_ffff)
        // A completion always names a slot in flight with the same generation; anything else
        // would be a kernel bug, and ignoring it keeps a stale result from landing anywhere.
        guard index < capacity else { return }
        let slot = table.pointee.slots + index
        guard slot.pointee.state == .inFlight, slot.pointee.userData(index: index) == completion.userData else { return }
        table.pointee.statistics.completions += 1
        if completion.flags & RawCompletion.ranAsSystemCall != 0 { table.pointee.statistics.systemCallRequests += 1 }
        if slot.pointee.operation.opcode == .sendZeroCopy {
            handleZeroCopySend(index, completion)
            return
        }
        let step = CompletionRule.step(
            opcode: slot.pointee.operation.opcode, result: completion.result, done: slot.pointee.done,
            remaining: slot.pointee.operation.byteCount, retries: slot.pointee.retries, blockBytes: slot.pointee.blockBytes)
        switch step {
        case .retry where !slot.pointee.cancelRequested:
            slot.pointee.retries += 1
            table.pointee.statistics.retries += 1
            resubmit(index, errno: -completion.result)
        case .resubmitRemainder(let bytes) where !slot.pointee.cancelRequested:
            slot.pointee.operation = slot.pointee.operation.advanced(by: bytes - slot.pointee.done)
            slot.pointee.done = bytes
            table.pointee.statistics.resubmissions += 1
            resubmit(index, errno: -completion.result)
        case .retry:
            finish(index, IOOutcome(bytes: slot.pointee.done, errno: Errno(rawValue: -completion.result)))
        case .resubmitRemainder(let bytes), .finished(let bytes):
            finish(index, IOOutcome(bytes: bytes, errno: nil))
        case .failed(let code, let bytes):
            finish(index, IOOutcome(bytes: bytes, errno: Errno(rawValue: code)))
        }
    }

    /// SEND_ZC completes twice: first with the send's result (IORING_CQE_F_MORE set when a
    /// notification will follow), then with IORING_CQE_F_NOTIF once the network stack has let
    /// go of the memory. Only then is the request finished and its buffer handed back, also
    /// when the send failed or was cancelled. Short sends are not resubmitted here: the caller
    /// sends the rest as a new request, since each send has its own notification.
    private func handleZeroCopySend(_ index: Int, _ completion: RawCompletion) {
        let slot = table.pointee.slots + index
        if completion.flags & DIO_IORING_CQE_F_NOTIF != 0 {
            if completion.result & Int32(bitPattern: DIO_IORING_NOTIF_USAGE_ZC_COPIED) != 0 {
                slot.pointee.outcome.copiedByKernel = true
            }
            slot.pointee.awaitingNotification = false
            finish(index, slot.pointee.outcome)
            return
        }
        let outcome = completion.result < 0
            ? IOOutcome(bytes: 0, errno: Errno(rawValue: -completion.result))
            : IOOutcome(bytes: Int(completion.result), errno: nil)
        if completion.flags & DIO_IORING_CQE_F_MORE != 0 {
            slot.pointee.outcome = outcome
            slot.pointee.awaitingNotification = true
        } else {
            finish(index, outcome)
        }
    }

    /// Queues a request again; if that fails, finishes it with `errno` (it is not in the
    /// kernel, so nothing would ever complete it).
    private func resubmit(_ index: Int, errno code: Int32) {
        do { try enqueue(index) } catch {
            let done = table.pointee.slots[index].done
            finish(index, IOOutcome(bytes: done, errno: error.errno ?? Errno(rawValue: code > 0 ? code : EIO)))
        }
    }

    private func finish(_ index: Int, _ outcome: IOOutcome) {
        let slot = table.pointee.slots + index
        var outcome = outcome
        if let realigned = slot.pointee.realigned {
            // One step of a realigned request ended: submit the next, or end the request.
            switch realigned.advance(after: outcome, cancelled: slot.pointee.cancelRequested, engine: self) {
            case .submit(let next):
                slot.pointee.operation = next
                slot.pointee.blockBytes = realigned.blockBytes(of: next)
                slot.pointee.done = 0
                slot.pointee.retries = 0
                do {
                    try enqueue(index)
                    return
                } catch {
                    realigned.release()
                    outcome = IOOutcome(bytes: 0, errno: error.errno ?? .ioError)
                }
            case .ended(let final, let statistics):
                outcome = final
                realigned.counters?.totals.add(statistics)
                table.pointee.statistics.add(statistics)
            }
            slot.pointee.realigned = nil
            table.pointee.realignedInFlight -= 1
            sparePlans.keep(realigned.takePlan())
            table.pointee.keepSpare(realigned)
        }
        if let waiter = slot.pointee.waiter {
            // An async request: free the slot, then resume its task (which runs later, never
            // inside this call).
            table.pointee.waitersInFlight -= 1
            table.pointee.release(index)
            waiter.finish(outcome)
            return
        }
        slot.pointee.state = .finished
        slot.pointee.outcome = outcome
        if slot.pointee.batched {
            table.pointee.batchedInFlight -= 1
            table.pointee.pushFinished(index)
        }
    }

    private func checkThread() throws(DirectIOError) {
        // Thread-local storage: no system call on the submission path.
        if let ownerThread, ownerThread != Sys.currentThread() {
            throw DirectIOError(.invalidArgument, operation: "use engine", detail: "this engine's ring was created with SINGLE_ISSUER on another thread, and the kernel accepts requests only from that thread; create the engine without threadPerCore to share it between threads")
        }
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
