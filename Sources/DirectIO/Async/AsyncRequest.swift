import Synchronization
import SystemPackage

/// One async I/O on its way through a ring worker: what to do, who waits for it, and whether
/// its task was cancelled.
///
/// Unchecked sendability: `continuation`, `group`, `tag`, `outcome`, `mayRegisterFile` and
/// the shutdown flags are written by the task before the request is posted (the post goes through the worker's
/// mutex, which orders it) or, afterwards, by the one thread that finishes the request (the
/// worker's, or a poster refused at shutdown), and read by the task only after the
/// continuation has resumed (which orders them again; a group resumes after an acquiring and
/// releasing decrement that every finisher makes). `cancelled` is atomic, since the
/// cancellation handler sets it from any thread; so is the flag of `scope` (a `let` of a
/// `Sendable` type), which the scope's handler sets.
final class AsyncRequest: @unchecked Sendable {
    let opcode: Opcode
    let fd: Int32
    /// Buffer address, or the iovec array for READV/WRITEV.
    let address: UInt
    let length: UInt32
    let offset: Int64
    let dataOnly: Bool
    /// The pool buffer the memory belongs to, when it is one: a worker whose engine has the
    /// pool registered uses READ_FIXED/WRITE_FIXED.
    let poolSlot: PoolSlot?
    let blockBytes: Int
    /// RWF_* flags of a write (RWF_ATOMIC).
    let rwFlags: Int32
    /// The `IOScope` whose handler forwards this request's cancellation, if any; else the
    /// request's own handler sets `cancelled`.
    let scope: IOScopeState?
    private let cancelled = Atomic<Bool>(false)
    /// Set (releasing) once a grouped request's `outcome` is written; its task reads the
    /// outcome through `settledOutcome` (acquiring), so the hand-over is ordered by this
    /// atomic and not only by the continuation's resumption.
    private let settled = Atomic<Bool>(false)

    var continuation: UnsafeContinuation<IOOutcome, Never>?
    /// Set instead of `continuation` for requests submitted together (`RingWorker.submit(_:_:resuming:)`):
    /// the group resumes its task once all are done, and each request keeps its `outcome`.
    var group: RequestGroup?
    var outcome = IOOutcome(bytes: 0, errno: nil)
    /// The user data of the engine slot that holds the request while it is in the kernel, for
    /// cancelling it (worker only); 0 before.
    var tag: UInt64 = 0
    /// The runtime had shut down: the request never reached the kernel.
    var refusedByShutdown = false
    /// A shutdown that cancels in-flight I/O asked the kernel to cancel this request.
    var cancelledByShutdown = false
    /// Whether the ring may put the file in its fixed-file table for this request: only from
    /// the file's second request on, so a file with one request is in no table and its
    /// `AsyncFile` closes it directly. Set by the task before posting (`AsyncFile.perform`);
    /// false unless it says so, since a slot for a file that closes directly would outlive it.
    var mayRegisterFile = false

    init(opcode: Opcode, fd: Int32, address: UInt = 0, length: Int = 0, offset: Int64 = 0, dataOnly: Bool = false, poolSlot: PoolSlot? = nil, blockBytes: Int = 1, rwFlags: Int32 = 0, scope: IOScopeState? = nil) {
        self.opcode = opcode
        self.fd = fd
        self.address = address
        self.length = UInt32(length)
        self.offset = offset
        self.dataOnly = dataOnly
        self.poolSlot = poolSlot
        self.blockBytes = blockBytes
        self.rwFlags = rwFlags
        self.scope = scope
    }

    /// A grouped request's outcome, for its task once the group has resumed it.
    var settledOutcome: IOOutcome {
        _ = settled.load(ordering: .acquiring)
        return outcome
    }

    var isCancelled: Bool { cancelled.load(ordering: .acquiring) || scope?.isCancelled == true }

    func markCancelled() { cancelled.store(true, ordering: .releasing) }

    /// The operation for `engine`, with its fixed-buffer slot when the pool is registered there
    /// and the file's fixed-file slot (-1: none).
    func operation(on engine: IOEngine, fileSlot: Int32) -> IOOperation {
        switch opcode {
        case .read, .readFixed, .write, .writeFixed:
            var operation = IOOperation.transfer(isRead: opcode == .read || opcode == .readFixed, fd: fd, fileSlot: fileSlot, address: address, count: Int(length), at: offset, fixedSlot: engine.fixedIndex(of: poolSlot))
            operation.rwFlags = rwFlags
            return operation
        case .fsync:
            return .fsync(fd: fd, fileSlot: fileSlot, dataOnly: dataOnly)
        default:
            return IOOperation(opcode: opcode, fd: fd, fileSlot: fileSlot, address: address, length: length, offset: offset)
        }
    }

    /// Hands the outcome to the waiting task (once).
    func finish(_ outcome: IOOutcome) {
        if let group {
            self.outcome = outcome
            self.group = nil
            settled.store(true, ordering: .releasing)
            group.finishOne()
            return
        }
        let waiting = continuation
        continuation = nil
        waiting?.resume(returning: outcome)
    }
}

/// Requests submitted together and awaited as one: the task resumes when the last finishes.
/// The count is atomic because a refused request can finish on the submitting thread while
/// its partner finishes on the ring's.
final class RequestGroup: Sendable {
    private let remaining: Atomic<Int>
    private let continuation: UnsafeContinuation<Void, Never>

    init(count: Int, resuming continuation: UnsafeContinuation<Void, Never>) {
        remaining = Atomic(count)
        self.continuation = continuation
    }

    func finishOne() {
        if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { continuation.resume() }
    }
}
