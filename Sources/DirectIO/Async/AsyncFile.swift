import CDirectIO
import Glibc
import Synchronization
import SystemPackage

/// A file or block device for async/await: `try await file.read(into: &buffer, at: offset)`
/// from any task, concurrently from many, with no thread blocked per I/O in flight.
///
/// Requests go to a ring of the file's `IORuntime`: the ring whose thread the task runs on
/// (tasks that prefer a ring's executor submit with no handoff), else the file's home ring.
/// When a ring has `queueDepth` requests in the kernel, further requests wait their turn in
/// order.
///
/// Cancelling the task submits ASYNC_CANCEL; the call returns only once the kernel's final
/// completion for its request has been reaped, so the memory it was given is never freed,
/// reused or returned to a pool while the kernel may still use it. It then throws
/// `CancellationError` if the kernel cancelled the request, or returns the real outcome if
/// the I/O finished first (a write that happened is reported as written).
///
/// Every call runs on the caller's executor (`nonisolated(nonsending)`): no hop in or out,
/// which matters most to tasks on a ring's executor, where each hop makes Swift's runtime look
/// up the task's executor preference under a lock.
///
/// Any memory, offset and length, as with `DirectFile`: what breaks the file's direct-I/O
/// alignment (`limits`) goes through the runtime's bounce buffers (the aligned middle still
/// straight to the caller's memory), and a write that covers blocks only partly reads, merges
/// and writes them back under block locks that a task awaits without blocking its thread.
/// Pool buffers and `AlignedBuffer`s at aligned offsets never need it. Open with
/// `misaligned: .fail` to have such requests refused instead.
public final class AsyncFile: Sendable {
    public let path: String
    public let limits: DeviceLimits
    /// Whether I/O bypasses the page cache (O_DIRECT is set).
    public let isDirect: Bool
    /// With `.preferred`, why direct I/O is not in use.
    public let fallbackNote: String?
    public let runtime: IORuntime
    /// The open descriptor. Each ring registers it in its fixed-file table on first use (the
    /// kernel then skips the descriptor lookup per request). It is closed after the file is
    /// dropped, once every ring has let go of it: no request can be in flight then, since every
    /// call holds the file until its request has completed.
    public let descriptor: Int32
    let rules: FileRules
    /// The ring requests from outside the runtime's threads go to.
    let home: Int
    let identity: DirectFile.Identity
    /// Whether requests that break the alignment are realigned (else refused).
    let bouncesMisaligned: Bool
    /// The caller's bounce pool, if it passed one; else the runtime's two.
    let bouncePool: BufferPool
    let smallBouncePool: BufferPool?
    let waitsForBounceBuffers: Bool
    let counters = SharedTransferCounters()
    /// Requests made so far, counted up to 2: a ring puts the file in its fixed-file table
    /// only for its second request on (`AsyncRequest.mayRegisterFile`), so a file with at most
    /// one request is in no ring's table and closes without asking the rings.
    private let requestsMade = Atomic<Int>(0)

    /// What this file's transfers have done so far, from every task: bytes moved straight
    /// between caller memory and the device, bytes bounced, blocks merged, waits for a bounce
    /// buffer. Counted as each call returns.
    public var statistics: TransferStatistics { counters.totals }

    /// Opens `path` on `runtime` (default: `IORuntime.shared()`).
    public init(path: String, options: OpenOptions = OpenOptions(), runtime: IORuntime? = nil) throws(DirectIOError) {
        let runtime: IORuntime = if let runtime { runtime } else { try IORuntime.shared() }
        let opened = try OpenedDescriptor.open(path: path, options: options)
        self.path = path
        self.limits = opened.limits
        self.isDirect = opened.isDirect
        self.fallbackNote = opened.fallbackNote
        self.runtime = runtime
        self.descriptor = opened.fd
        self.rules = FileRules(path: path, limits: opened.limits, isDirect: opened.isDirect)
        self.home = runtime.assignHome()
        self.identity = opened.identity
        self.bouncesMisaligned = options.misaligned == .bounce
        self.bouncePool = options.bouncePool ?? runtime.bouncePool
        self.smallBouncePool = options.bouncePool == nil ? runtime.smallBouncePool : nil
        self.waitsForBounceBuffers = options.waitForBounceBuffers
        if let note = opened.fallbackNote {
            runtime.logger?.info("direct I/O refused: using the page cache", metadata: ["directio.path": "\(path)", "directio.reason": "\(note)"])
        }
    }

    deinit {
        // No request is queued or in flight (every call holds the file until its request has
        // completed). A file used once is in no ring's table: closed now. Otherwise the rings
        // may hold the descriptor in their fixed-file tables: it is closed once they have all
        // let go, so its number cannot be reused under them.
        if requestsMade.load(ordering: .acquiring) <= 1 {
            _ = try? Sys.close(descriptor)
        } else {
            runtime.closeDescriptor(descriptor)
        }
    }

    /// Counts `count` requests about to be made (up to 2; afterwards a load only, so tasks
    /// sharing a hot file do not contend on it), and says whether they may register the file:
    /// only when the count, with them, reaches 2, so the file closes through the rings.
    @inline(__always) private func countRequests(_ count: Int) -> Bool {
        guard requestsMade.load(ordering: .relaxed) < 2 else { return true }
        return requestsMade.add(count, ordering: .releasing).newValue >= 2
    }

    // MARK: Buffers DirectIO owns

    /// Reads up to `count` bytes (default: the whole buffer) at `offset`; returns the bytes
    /// read, fewer only at end of file. Registered pool buffers use READ_FIXED.
    nonisolated(nonsending) public func read<Buffer: IOBuffer & ~Copyable>(into buffer: inout Buffer, count: Int? = nil, at offset: Int64, in scope: IOScope? = nil) async throws -> Int {
        let length = count ?? buffer.count
        try rules.checkFits(length, in: buffer.count, operation: "read", offset: offset)
        return try await transfer(.read, address: UInt(bitPattern: buffer.baseAddress), length: length, at: offset, poolSlot: buffer.poolSlot, scope: scope)
    }

    /// Writes `count` bytes (default: the whole buffer) at `offset`; returns the bytes written.
    nonisolated(nonsending) public func write<Buffer: IOBuffer & ~Copyable>(_ buffer: borrowing Buffer, count: Int? = nil, at offset: Int64, in scope: IOScope? = nil) async throws -> Int {
        let length = count ?? buffer.count
        try rules.checkFits(length, in: buffer.count, operation: "write", offset: offset)
        return try await transfer(.write, address: UInt(bitPattern: buffer.baseAddress), length: length, at: offset, poolSlot: buffer.poolSlot, scope: scope)
    }

    // MARK: Untorn writes

    /// Writes `count` bytes (default: the whole buffer) at `offset` whole or not at all
    /// (RWF_ATOMIC); the rules are `DirectFile.atomicWrite`'s, checked before anything
    /// reaches the kernel.
    nonisolated(nonsending) public func atomicWrite<Buffer: IOBuffer & ~Copyable>(_ buffer: borrowing Buffer, count: Int? = nil, at offset: Int64, in scope: IOScope? = nil) async throws -> Int {
        let length = count ?? buffer.count
        try rules.checkFits(length, in: buffer.count, operation: "atomic write", offset: offset)
        return try await atomicWrite(address: UInt(bitPattern: buffer.baseAddress), length: length, at: offset, scope: scope)
    }

    /// Writes aligned caller memory at `offset` whole or not at all; see the pool-buffer form.
    nonisolated(nonsending) public func atomicWrite(_ buffer: UnsafeRawBufferPointer, at offset: Int64, in scope: IOScope? = nil) async throws -> Int {
        try await atomicWrite(address: UInt(bitPattern: buffer.baseAddress), length: buffer.count, at: offset, scope: scope)
    }

    nonisolated(nonsending) private func atomicWrite(address: UInt, length: Int, at offset: Int64, scope: IOScope?) async throws -> Int {
        let name = "atomic write"
        try rules.checkAtomicWrite(name: name, address: address, offset: offset, length: length)
        // No pool slot: never WRITE_FIXED (see `IOOperation.atomicWrite`).
        let request = AsyncRequest(opcode: .write, fd: descriptor, address: address, length: length, offset: offset,
                                   blockBytes: rules.alignment.writeAlignment, rwFlags: DIO_RWF_ATOMIC, scope: covered(by: scope))
        let outcome = try await perform(request, name: name, offset: offset)
        if let errno = outcome.errno {
            throw rules.failure(errno, name: name, call: carrier.name(of: .write, rwFlags: DIO_RWF_ATOMIC), address: address, offset: offset, length: length, isRead: false, done: outcome.bytes)
        }
        if isDirect { counters.add(TransferStatistics(bytesDirect: outcome.bytes)) }
        return outcome.bytes
    }

    /// Writes `count` bytes of `buffer` at `offset`, with RWF_DSYNC when `durably` (durable
    /// when it returns; FUA where the device has it). The task's cancellation does not stop
    /// it: for writes that more than the calling task wait on (`DurableLog`'s group commit).
    /// Aligned memory and offsets only.
    nonisolated(nonsending) package func writeToTheEnd(_ buffer: borrowing PoolBuffer, count: Int, at offset: Int64, durably: Bool) async throws -> Int {
        let name = durably ? "durable write" : "write"
        try rules.checkFits(count, in: buffer.count, operation: name, offset: offset)
        let address = UInt(bitPattern: buffer.baseAddress)
        if let violation = rules.alignment.violation(address: address, offset: offset, length: count, isRead: false) {
            throw DirectIOError(.misaligned, operation: name, path: path, offset: offset, length: count, detail: AlignmentCheck.describe(violation, limits: limits, isRead: false))
        }
        let request = AsyncRequest(opcode: .write, fd: descriptor, address: address, length: count, offset: offset, poolSlot: buffer.poolSlot,
                                   blockBytes: rules.alignment.writeAlignment, rwFlags: durably ? DIO_RWF_DSYNC : 0)
        let outcome = try await perform(request, name: name, offset: offset, cancellable: false)
        if let errno = outcome.errno {
            throw rules.failure(errno, name: name, call: carrier.name(of: .write, rwFlags: durably ? DIO_RWF_DSYNC : 0), address: address, offset: offset, length: count, isRead: false, done: outcome.bytes)
        }
        if isDirect { counters.add(TransferStatistics(bytesDirect: outcome.bytes)) }
        return outcome.bytes
    }

    // MARK: Caller memory

    /// Reads into caller memory, which must stay valid until this returns (it returns only
    /// after the kernel is done with it, cancelled or not).
    nonisolated(nonsending) public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, in scope: IOScope? = nil) async throws -> Int {
        try await transfer(.read, address: UInt(bitPattern: buffer.baseAddress), length: buffer.count, at: offset, poolSlot: nil, scope: scope)
    }

    /// Writes caller memory; see `read(into:at:)`.
    nonisolated(nonsending) public func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64, in scope: IOScope? = nil) async throws -> Int {
        try await transfer(.write, address: UInt(bitPattern: buffer.baseAddress), length: buffer.count, at: offset, poolSlot: nil, scope: scope)
    }

    /// Reads `count` bytes at `offset` into a new array; fewer only at end of file.
    nonisolated(nonsending) public func read(count: Int, at offset: Int64, in scope: IOScope? = nil) async throws -> [UInt8] {
        if let problem = AlignmentCheck.argumentProblem(offset: offset, length: count) {
            throw DirectIOError(.invalidArgument, operation: "read", path: path, offset: offset, length: count, detail: problem)
        }
        guard count > 0 else { return [] }
        // Freed only after the read has returned, that is after its last completion.
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        defer { memory.deallocate() }
        let got = try await read(into: memory, at: offset, in: scope)
        return Array(memory[0..<got])
    }

    /// Writes `bytes` at `offset`; returns the bytes written. The bytes are first copied to
    /// memory aligned for the device (an array's storage cannot be lent across an await), so
    /// only an unaligned offset or length still needs the bounce buffer.
    nonisolated(nonsending) public func write(_ bytes: [UInt8], at offset: Int64, in scope: IOScope? = nil) async throws -> Int {
        guard !bytes.isEmpty else { return try await write(UnsafeRawBufferPointer(start: nil, count: 0), at: offset, in: scope) }
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: max(16, rules.alignment.memoryAlignment))
        defer { memory.deallocate() }
        memory.copyBytes(from: bytes)
        return try await write(UnsafeRawBufferPointer(memory), at: offset, in: scope)
    }

    // MARK: Vectored

    /// Reads into several buffers from consecutive file bytes (READV).
    nonisolated(nonsending) public func read(into buffers: [UnsafeMutableRawBufferPointer], at offset: Int64, in scope: IOScope? = nil) async throws -> Int {
        try await vectored(.readv, buffers.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }, at: offset, scope: scope)
    }

    /// Writes several buffers to consecutive file bytes (WRITEV).
    nonisolated(nonsending) public func write(_ buffers: [UnsafeRawBufferPointer], at offset: Int64, in scope: IOScope? = nil) async throws -> Int {
        try await vectored(.writev, buffers.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }, at: offset, scope: scope)
    }

    // MARK: Durability

    /// Makes written data durable: fsync, or fdatasync with `dataOnly` (the data and the
    /// metadata needed to read it back, not timestamps).
    nonisolated(nonsending) public func sync(dataOnly: Bool = false, in scope: IOScope? = nil) async throws {
        let request = AsyncRequest(opcode: .fsync, fd: descriptor, dataOnly: dataOnly, scope: covered(by: scope))
        let outcome = try await perform(request, name: dataOnly ? "data sync" : "sync", offset: 0)
        if let errno = outcome.errno {
            throw DirectIOError.system(errno, operation: dataOnly ? "data sync" : "sync", call: carrier.name(of: .fsync, dataOnly: dataOnly), path: path)
        }
    }

    // MARK: Requests

    /// Every request of a task goes through the ring (or the blocking engine where there is none).
    var carrier: RequestCarrier { RequestCarrier(runtime.usesIOUring ? .ioUring : .blocking, waited: false) }

    @inline(__always) nonisolated(nonsending) private func transfer(_ opcode: Opcode, address: UInt, length: Int, at offset: Int64, poolSlot: PoolSlot?, scope: IOScope?) async throws -> Int {
        let isRead = opcode == .read
        let name = isRead ? "read" : "write"
        if let problem = AlignmentCheck.argumentProblem(offset: offset, length: length) {
            throw DirectIOError(.invalidArgument, operation: name, path: path, offset: offset, length: length, detail: problem)
        }
        guard length > 0 else { return 0 }
        if let violation = rules.alignment.violation(address: address, offset: offset, length: length, isRead: isRead) {
            guard bouncesMisaligned else {
                throw DirectIOError(.misaligned, operation: name, path: path, offset: offset, length: length, detail: AlignmentCheck.describe(violation, limits: limits, isRead: isRead))
            }
            return try await transferRealigned(isRead: isRead, .one(CallerSegment(address: address, length: length)), at: offset, name: name, scope: scope)
        }
        let request = AsyncRequest(opcode: opcode, fd: descriptor, address: address, length: length, offset: offset, poolSlot: poolSlot,
                                   blockBytes: isRead ? rules.alignment.readAlignment : rules.alignment.writeAlignment, scope: covered(by: scope))
        let outcome = try await perform(request, name: name, offset: offset)
        if let errno = outcome.errno {
            throw rules.failure(errno, name: name, call: carrier.name(of: opcode),
                                address: address, offset: offset, length: length, isRead: isRead, done: outcome.bytes)
        }
        if isDirect { counters.add(TransferStatistics(bytesDirect: outcome.bytes)) }
        return outcome.bytes
    }

    nonisolated(nonsending) private func vectored(_ opcode: Opcode, _ vectors: [iovec], at offset: Int64, scope: IOScope?) async throws -> Int {
        let isRead = opcode == .readv
        let name = isRead ? "vectored read" : "vectored write"
        let total = vectors.reduce(0) { $0 + $1.iov_len }
        if try rules.checkVectors(vectors, name: name, offset: offset, isRead: isRead, realign: bouncesMisaligned) {
            return try await transferRealigned(isRead: isRead, .many(vectors.map { CallerSegment(address: UInt(bitPattern: $0.iov_base), length: $0.iov_len) }), at: offset, name: name, scope: scope)
        }
        guard total > 0 else { return 0 }
        // The engine rewrites the iovecs to resubmit a short transfer's remainder: it gets its
        // own copy, alive until the request has completed (this frame outlives the request).
        let copy = UnsafeMutablePointer<iovec>.allocate(capacity: vectors.count)
        copy.initialize(from: vectors, count: vectors.count)
        defer { copy.deallocate() }
        let request = AsyncRequest(opcode: opcode, fd: descriptor, address: UInt(bitPattern: copy), length: vectors.count, offset: offset,
                                   blockBytes: isRead ? rules.alignment.readAlignment : rules.alignment.writeAlignment, scope: covered(by: scope))
        let outcome = try await perform(request, name: name, offset: offset)
        if let errno = outcome.errno {
            throw rules.failure(errno, name: name, call: carrier.name(of: opcode),
                                address: nil, offset: offset, length: total, isRead: isRead, done: outcome.bytes)
        }
        if isDirect { counters.add(TransferStatistics(bytesDirect: outcome.bytes)) }
        return outcome.bytes
    }

    /// The state of `scope` when its handler covers this file's requests, else nil (the
    /// request then gets a handler of its own).
    @inline(__always) func covered(by scope: IOScope?) -> IOScopeState? {
        guard let scope, scope.covers(runtime) else { return nil }
        return scope.state
    }

    /// Submits `request` and waits for its final completion, also when the task is cancelled
    /// meanwhile (cancellation is forwarded to the kernel, then awaited): by the request's
    /// `IOScope`, or else by a handler around this one request.
    /// With `cancellable: false` the task's cancellation is not forwarded: the request runs to
    /// its end (for writes that serve more than the calling task, like a log's group write).
    @inline(__always) nonisolated(nonsending) func perform(_ request: AsyncRequest, name: String, offset: Int64, cancellable: Bool = true) async throws -> IOOutcome {
        request.mayRegisterFile = countRequests(1)
        let worker = runtime.worker(home: home)
        let outcome: IOOutcome
        if request.scope != nil || !cancellable {
            outcome = await suspend { worker.submit(request, resuming: $0) }
        } else {
            outcome = await withTaskCancellationHandler {
                await suspend { worker.submit(request, resuming: $0) }
            } onCancel: {
                request.markCancelled()
                worker.post(.cancel(request))
            }
        }
        if request.refusedByShutdown || (outcome.errno == .canceled && request.cancelledByShutdown) {
            throw DirectIOError(.cancelled, operation: name, path: path, offset: offset, detail: "the I/O runtime has shut down")
        }
        if outcome.errno == .canceled && request.isCancelled { throw CancellationError() }
        return outcome
    }

    /// `perform` for two requests submitted together, awaited as one.
    nonisolated(nonsending) func perform(_ first: AsyncRequest, _ second: AsyncRequest, name: String, offset: Int64) async throws -> (IOOutcome, IOOutcome) {
        let mayRegister = countRequests(2)
        first.mayRegisterFile = mayRegister
        second.mayRegisterFile = mayRegister
        let worker = runtime.worker(home: home)
        if first.scope != nil {
            await suspend { worker.submit(first, second, resuming: $0) }
        } else {
            await withTaskCancellationHandler {
                await suspend { worker.submit(first, second, resuming: $0) }
            } onCancel: {
                for request in [first, second] {
                    request.markCancelled()
                    worker.post(.cancel(request))
                }
            }
        }
        let outcomes = (first.settledOutcome, second.settledOutcome)
        for (request, outcome) in [(first, outcomes.0), (second, outcomes.1)] where request.refusedByShutdown || (outcome.errno == .canceled && request.cancelledByShutdown) {
            throw DirectIOError(.cancelled, operation: name, path: path, offset: offset, detail: "the I/O runtime has shut down")
        }
        if [(first, outcomes.0), (second, outcomes.1)].contains(where: { $0.1.errno == .canceled && $0.0.isCancelled }) { throw CancellationError() }
        return outcomes
    }
}
