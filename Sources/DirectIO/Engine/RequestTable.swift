import Glibc
import SystemPackage

/// The engine's record of every request: fixed-capacity storage for the slots and the queues
/// between them (free slots, finished batched requests, completions collected from the kernel).
///
/// It lives behind one pointer owned by `IOEngine`. The engine is used by one thread at a time,
/// and reaching its state through a pointer spares every access the dynamic exclusivity check
/// Swift applies to class stored properties: measured with callgrind at a third of the
/// user-space instructions per I/O (BENCHMARKS.md, "What was found").
struct RequestTable: ~Copyable {
    let capacity: Int
    let slots: UnsafeMutablePointer<Slot>
    private let free: UnsafeMutablePointer<Int32>
    private(set) var freeCount: Int
    /// Finished batched requests in completion order, a ring of `capacity` entries.
    private let finished: UnsafeMutablePointer<Int32>
    private var finishedHead = 0
    private(set) var finishedCount = 0
    /// Completions moved out of the kernel's queue and not yet acted on.
    let collected: UnsafeMutablePointer<RawCompletion>
    let collectedCapacity: Int
    var collectedCount = 0
    var pendingCancels = 0
    /// Batched requests submitted and not yet finished.
    var batchedInFlight = 0
    /// Of those, realigned ones (which hold block locks until they finish).
    var realignedInFlight = 0
    /// Async requests in flight (their tasks are resumed at completion, not reaped).
    var waitersInFlight = 0
    var statistics = EngineStatistics()
    /// Finished realigned requests, for the next ones to reuse (at most one per slot).
    private(set) var spareRealigned: [RealignedRequest] = []
    /// The last io_uring_enter failure, until an enter succeeds again: new requests are
    /// refused meanwhile (`EnterBackoff`).
    var enterFailure: DirectIOError? = nil

    init(capacity: Int, completionCapacity: Int) {
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
        free = .allocate(capacity: capacity)
        finished = .allocate(capacity: capacity)
        collected = .allocate(capacity: completionCapacity)
        collectedCapacity = completionCapacity
        for index in 0..<capacity {
            (slots + index).initialize(to: Slot())
            free[index] = Int32(capacity - 1 - index)
        }
        freeCount = capacity
    }

    deinit {
        slots.deinitialize(count: capacity)
        slots.deallocate()
        free.deallocate()
        finished.deallocate()
        collected.deallocate()
    }

    /// Requests submitted and not yet finished.
    var inFlight: Int { capacity - freeCount - finishedCount }

    mutating func takeFreeSlot() -> Int? {
        guard freeCount > 0 else { return nil }
        freeCount -= 1
        return Int(free[freeCount])
    }

    mutating func release(_ index: Int) {
        (slots + index).pointee.reset()  // not slots[index]: see IOEngine.start on TSan
        free[freeCount] = Int32(index)
        freeCount += 1
    }

    mutating func popSpareRealigned() -> RealignedRequest? {
        spareRealigned.popLast()
    }

    mutating func keepSpare(_ request: RealignedRequest) {
        if spareRealigned.count < capacity { spareRealigned.append(request) }
    }

    mutating func pushFinished(_ index: Int) {
        finished[(finishedHead + finishedCount) % capacity] = Int32(index)
        finishedCount += 1
    }

    mutating func popFinished() -> Int? {
        guard finishedCount > 0 else { return nil }
        let index = Int(finished[finishedHead])
        finishedHead = (finishedHead + 1) % capacity
        finishedCount -= 1
        return index
    }
}

/// One request's record.
package struct Slot: ~Copyable {
    enum State { case free, inFlight, finished }
    /// Set in the user data of ASYNC_CANCEL requests, so their completions are told apart.
    package static let cancelMarker: UInt64 = 1 << 63

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
    /// SEND_ZC: the send's result has arrived (in `outcome`) and the buffer stays the kernel's
    /// until the notification completion.
    var awaitingNotification = false
    /// The buffer a batched request owns until it is reaped.
    var buffer: PoolBuffer? = nil
    /// Bytes to slide inside `buffer` once the request has completed (see `Shift`).
    var shift: Shift? = nil
    /// The file's counters, for batched data requests on a direct file (bytes count as direct).
    var counters: TransferCounters? = nil
    /// A batched request carried out in steps by the realignment layer.
    var realigned: RealignedRequest? = nil
    /// An async request: its task is resumed with the outcome at completion and the slot
    /// freed at once (no reap).
    var waiter: AsyncRequest? = nil

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
        awaitingNotification = false
        self.blockBytes = blockBytes
        self.buffer = buffer
        shift = nil
        counters = nil
        realigned = nil
        waiter = nil
    }

    mutating func reset() {
        state = .free
        buffer = nil
        shift = nil
        counters = nil
        realigned = nil
        waiter = nil
    }
}

/// A batched request whose caller memory is misaligned against its file offset, served
/// without a bounce buffer: the device moves the aligned block range to or from the pool
/// buffer's aligned start, and the caller's bytes slide to their place inside the same buffer
/// (one memmove). Reads slide after the completion; writes slid before submission and slide
/// back after it, so the caller gets its buffer as it gave it.
struct Shift {
    /// Where the caller's bytes belong, from the buffer's start.
    var callerOffset: Int
    /// Where the device put (or took) them, from the buffer's start.
    var deviceOffset: Int
    var count: Int
    var isRead: Bool

    /// Slides the bytes the device moved into place and returns how many of the caller's
    /// bytes the request moved.
    func apply(to base: UnsafeMutableRawPointer, deviceBytes: Int) -> Int {
        let moved = max(0, min(count, deviceBytes - deviceOffset))
        if isRead {
            (base + callerOffset).copyMemory(from: base + deviceOffset, byteCount: moved)  // memmove: the ranges overlap
        } else {
            (base + callerOffset).copyMemory(from: base + deviceOffset, byteCount: count)
        }
        return moved
    }
}

/// Counters of what an engine has done.
public struct EngineStatistics: Sendable, Equatable {
    public var submitted = 0
    public var completions = 0
    /// Requests submitted again whole after EAGAIN or EINTR.
    public var retries = 0
    /// Remainders submitted after short transfers.
    public var resubmissions = 0
    /// Requests whose memory lies in a registered buffer (READ_FIXED/WRITE_FIXED); a write run
    /// as a system call (`systemCallRequests`) counts here too, though the call names an address.
    public var fixedBufferRequests = 0
    /// Requests that named their file by fixed-file slot.
    public var fixedFileRequests = 0
    /// Requests an io_uring engine ran as system calls on the caller's thread: the writes and
    /// syncs a synchronous call waits for, which io_uring would complete on a kernel worker.
    public var systemCallRequests = 0
    /// Files opened `.preferred` that fell back to buffered I/O.
    public var bufferedFallbacks = 0
    /// io_uring_enter calls that failed beyond their own retries (see `EnterBackoff`).
    public var enterFailures = 0
    /// Buffers kept forever at shutdown because the ring could no longer be entered to
    /// learn that the kernel was done with them.
    public var buffersKept = 0
    /// Pools whose fixed-buffer slots share pages another ring pinned (an `IORuntime`'s rings
    /// pin each registered pool once between them), instead of pinning them again.
    public var poolsShared = 0
    /// Bytes direct, bounced and shifted, read-modify-write blocks and bounce waits, over all
    /// the engine's files.
    public var transfers = TransferStatistics()

    mutating func add(_ moved: TransferStatistics) {
        transfers.add(moved)
    }
}

/// Hands out contiguous ranges of fixed-buffer or fixed-file slots (first fit; pools and files
/// are few and long-lived).
struct FixedSlotAllocator: Sendable {
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
