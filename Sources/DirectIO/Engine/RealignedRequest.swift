import Glibc
import SystemPackage

/// A batched request that breaks its file's alignment, carried out by the shared
/// `Realignment` layer in several device requests under one engine slot and one tag: the
/// engine submits the next step when the previous one completes, from `reap`, so the caller
/// submits and reaps it like any other batched request.
///
/// It holds the request's block locks and bounce buffer until the last step has completed
/// (then `release` gives both back), and the caller's pool buffer stays in the slot as for
/// every batched request. Engine thread only, like the slot that holds it. The engine keeps
/// finished ones and gives them the next request's `Parts`, so a realigned request allocates
/// nothing once its engine has warmed up.
final class RealignedRequest {
    /// What one request is made of.
    struct Parts: ~Copyable {
        var realignment: Realignment
        var bounce: PoolBuffer?
        var bounceSlot: UInt16?
        var keys: BlockLocks.Keys
        var fd: Int32
        var fileSlot: Int32
        var readBlock: Int
        var writeBlock: Int
        /// The file offset the caller asked for, reported in the completion.
        var offset: Int64
        /// The file's counters: the request's direct and bounced bytes are added when it ends.
        var counters: TransferCounters?
    }

    private var parts: Parts
    /// The second request of a pair, run after the first (one slot, one request at a time).
    private var second: DeviceRequest?
    private var firstOutcome: IOOutcome?
    private var released = false

    init(_ parts: consuming Parts) {
        self.parts = parts
    }

    /// Makes this finished request carry out another.
    func reuse(for parts: consuming Parts) {
        self.parts = parts
        second = nil
        firstOutcome = nil
        released = false
    }

    var offset: Int64 { parts.offset }
    var counters: TransferCounters? { parts.counters }

    /// The finished request's plan, for `SparePlans`.
    func takePlan() -> TransferPlan {
        parts.realignment.takePlan()
    }

    /// What comes after a step.
    enum Next {
        /// Submit this under the same slot.
        case submit(IOOperation)
        /// The request is over (locks and bounce buffer given back): its outcome for the
        /// caller, and what to count.
        case ended(IOOutcome, TransferStatistics)
    }

    /// The step after the outcome of the previous one (nil for the first).
    func advance(after outcome: IOOutcome?, cancelled: Bool, engine: IOEngine) -> Next {
        do throws(DirectIOError) {
            if let outcome {
                if let pending = second {
                    second = nil
                    firstOutcome = outcome
                    if cancelled { return end(.canceled) }
                    return .submit(operation(pending, engine))
                }
                if let first = firstOutcome {
                    firstOutcome = nil
                    try parts.realignment.complete(first, outcome)
                } else {
                    try parts.realignment.complete(outcome)
                }
            }
            switch try parts.realignment.next() {
            case .done(let moved):
                let statistics = parts.realignment.statistics(moved: moved)
                release()
                return .ended(IOOutcome(bytes: moved, errno: nil), statistics)
            case .submit(let first, let pair):
                if cancelled { return end(.canceled) }
                second = pair
                return .submit(operation(first, engine))
            }
        } catch {
            return end(error.errno ?? .ioError)
        }
    }

    /// Whether the caller asked for a read (the completion's opcode says what was asked, not
    /// which step ran last).
    var isRead: Bool { parts.realignment.isRead }

    /// The completion rule's block size for `operation` (a short transfer's remainder).
    func blockBytes(of operation: IOOperation) -> Int {
        operation.opcode.readsIntoMemory ? parts.readBlock : parts.writeBlock
    }

    private func end(_ errno: Errno) -> Next {
        release()
        return .ended(IOOutcome(bytes: 0, errno: errno), TransferStatistics())
    }

    /// Gives back the block locks and the bounce buffer; the kernel is done with both (every
    /// step has completed when the request ends).
    func release() {
        guard !released else { return }
        released = true
        BlockLocks.shared.unlock(parts.keys)
        _ = parts.bounce.take()
    }

    private func operation(_ request: DeviceRequest, _ engine: IOEngine) -> IOOperation {
        request.operation(fd: parts.fd, fileSlot: parts.fileSlot, bounceSlot: parts.bounceSlot, engine: engine)
    }
}

extension DeviceRequest {
    /// The engine operation for this request: memory in the bounce buffer uses its fixed slot,
    /// caller memory that lies in a registered pool buffer that one's.
    func operation(fd: Int32, fileSlot: Int32, bounceSlot: UInt16?, engine: IOEngine) -> IOOperation {
        if vectorCount > 0 {
            return .vectored(isRead ? .readv : .writev, fd: fd, fileSlot: fileSlot, vectors: address.assumingMemoryBound(to: iovec.self), count: vectorCount, at: fileOffset)
        }
        let fixed = inBounceBuffer ? bounceSlot : engine.fixedIndex(containing: address, length: length)
        return isRead
            ? .read(fd: fd, fileSlot: fileSlot, into: address, count: length, at: fileOffset, fixedSlot: fixed)
            : .write(fd: fd, fileSlot: fileSlot, from: address, count: length, at: fileOffset, fixedSlot: fixed)
    }
}
