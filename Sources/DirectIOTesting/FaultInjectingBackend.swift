import DirectIO
import Glibc
import SystemPackage

/// Faults a kernel may return, injected deterministically from a seed: the same seed and the
/// same requests give the same faults, so a failing run replays.
public struct FaultPlan: Sendable {
    public var seed: UInt64
    /// Percent of data transfers cut short (to a multiple of `shortGranularity` bytes, so a
    /// direct I/O remainder stays aligned).
    public var shortTransferPercent: Int
    public var shortGranularity: Int
    /// Percent of requests answered -EAGAIN or -EINTR without being done (io_uring does this
    /// when block-layer tags run out, liburing#766).
    public var againPercent: Int
    public var interruptPercent: Int
    /// Requests whose file range covers one of these offsets fail with -EIO.
    public var ioErrorOffsets: [Int64]
    /// Percent of completions held back for one reap, so they arrive out of order.
    public var delayPercent: Int
    /// Writes whose file range covers one of these offsets fail with -ENOSPC.
    public var noSpaceOffsets: [Int64]
    /// Percent of data transfers answered -ECANCELED (as if cancelled by someone else).
    public var cancelPercent: Int

    public init(seed: UInt64, shortTransferPercent: Int = 0, shortGranularity: Int = 4096, againPercent: Int = 0,
                interruptPercent: Int = 0, ioErrorOffsets: [Int64] = [], delayPercent: Int = 0, noSpaceOffsets: [Int64] = [], cancelPercent: Int = 0) {
        self.seed = seed
        self.shortTransferPercent = shortTransferPercent
        self.shortGranularity = shortGranularity
        self.againPercent = againPercent
        self.interruptPercent = interruptPercent
        self.ioErrorOffsets = ioErrorOffsets
        self.delayPercent = delayPercent
        self.noSpaceOffsets = noSpaceOffsets
        self.cancelPercent = cancelPercent
    }
}

extension IOEngine {
    /// An engine that injects `plan`'s faults between DirectIO and the real kernel (io_uring or
    /// blocking, per `choice`): for testing storage code against short transfers, EAGAIN,
    /// EINTR, EIO and ENOSPC at chosen offsets, ECANCELED and reordered completions. DirectIO
    /// handles the first three itself (retry, resubmit); EIO, ENOSPC and ECANCELED reach the
    /// caller with their offset.
    public static func injectingFaults(
        _ plan: FaultPlan, _ choice: Choice = .automatic, queueDepth: Int = 64, threadPerCore: Bool = false,
        fixedBufferSlots: Int = 1024, fixedFileSlots: Int = 256
    ) throws(DirectIOError) -> IOEngine {
        try IOEngine(choice, queueDepth: queueDepth, ringFlags: threadPerCore ? .threadPerCore : .anyThread, fixedBufferSlots: fixedBufferSlots, fixedFileSlots: fixedFileSlots) { inner in
            FaultInjectingBackend(wrapping: inner, plan: plan)
        }
    }
}

extension IORuntime {
    /// A runtime whose rings inject `plan`'s faults (each ring from its own copy of the seed):
    /// for testing async code against short transfers, EAGAIN, EINTR, EIO, ENOSPC, ECANCELED
    /// and reordered completions, on real files.
    public static func injectingFaults(_ plan: FaultPlan, rings: Int = 1, queueDepth: Int = 64, engine: IOEngine.Choice = .automatic) throws(DirectIOError) -> IORuntime {
        try IORuntime(rings: rings, queueDepth: queueDepth, engine: engine, bounceBuffers: 8, bounceBufferBytes: 256 << 10) { inner in
            FaultInjectingBackend(wrapping: inner, plan: plan)
        }
    }
}

/// Wraps a real backend and injects the faults in a `FaultPlan` between the engine and the
/// kernel. It exercises, against real files, every path by which the engine turns kernel
/// results into outcomes: retry, remainder resubmission, error reporting, reordering.
final class FaultInjectingBackend: WrappingBackend {
    let inner: any EngineBackend
    private let plan: FaultPlan
    private var random: UInt64
    /// Completions made up here (EAGAIN, EINTR, EIO), or released from the delay queue.
    private var outbox: [RawCompletion] = []
    private var delayed: [RawCompletion] = []

    init(wrapping inner: any EngineBackend, plan: FaultPlan) {
        self.inner = inner
        self.plan = plan
        self.random = plan.seed
    }


    private func roll(_ percent: Int) -> Bool {
        guard percent > 0 else { return false }
        random &+= 0x9E37_79B9_7F4A_7C15
        var z = random
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int((z ^ (z >> 31)) % 100) < percent
    }

    func enqueue(_ operation: IOOperation, userData: UInt64) -> Bool {
        inject(operation, userData: userData) { inner.enqueue($0, userData: userData) }
    }

    /// A synchronous caller's request meets the same faults, then the inner backend's way with
    /// such requests (the ring runs writes as system calls): that path is tested too.
    func enqueueWaited(_ operation: IOOperation, userData: UInt64) -> Bool {
        inject(operation, userData: userData) { inner.enqueueWaited($0, userData: userData) }
    }

    /// Answers `operation` with a fault from the plan, or hands it (perhaps cut short) to `pass`.
    private func inject(_ operation: IOOperation, userData: UInt64, pass: (IOOperation) -> Bool) -> Bool {
        if operation.opcode.transfersData {
            let start = operation.offset, end = operation.offset + Int64(operation.byteCount)
            if plan.ioErrorOffsets.contains(where: { $0 >= start && $0 < end }) {
                outbox.append(RawCompletion(userData: userData, result: -EIO, flags: 0))
                return true
            }
            let writes = operation.opcode == .write || operation.opcode == .writev || operation.opcode == .writeFixed
            if writes && plan.noSpaceOffsets.contains(where: { $0 >= start && $0 < end }) {
                outbox.append(RawCompletion(userData: userData, result: -ENOSPC, flags: 0))
                return true
            }
            if roll(plan.cancelPercent) {
                outbox.append(RawCompletion(userData: userData, result: -ECANCELED, flags: 0))
                return true
            }
            if roll(plan.againPercent) {
                outbox.append(RawCompletion(userData: userData, result: -EAGAIN, flags: 0))
                return true
            }
            if roll(plan.interruptPercent) {
                outbox.append(RawCompletion(userData: userData, result: -EINTR, flags: 0))
                return true
            }
            if let shortened = shortened(operation) {
                return pass(shortened)
            }
        }
        return pass(operation)
    }

    /// The operation asking for fewer bytes, when the plan says to cut this one short.
    private func shortened(_ operation: IOOperation) -> IOOperation? {
        let granularity = plan.shortGranularity
        switch operation.opcode {
        case .read, .write, .readFixed, .writeFixed:
            let blocks = Int(operation.length) / granularity
            guard blocks > 1, roll(plan.shortTransferPercent) else { return nil }
            var short = operation
            short.length = UInt32((1 + Int(random % UInt64(blocks - 1))) * granularity)
            return short
        case .readv, .writev:
            // Fewer iovecs: every iovec DirectIO sends is itself a whole number of blocks.
            guard operation.length > 1, roll(plan.shortTransferPercent) else { return nil }
            var short = operation
            short.length = UInt32(1 + Int(random % UInt64(operation.length - 1)))
            return short
        default:
            return nil
        }
    }

    func submit(waitingFor minimum: Int) throws(Errno) {
        let ready = outbox.count + delayed.count
        try inner.submit(waitingFor: ready >= minimum ? 0 : minimum - ready)
    }

    func reap(into buffer: UnsafeMutablePointer<RawCompletion>, limit: Int) -> Int {
        // Completions held back last time go out now, ahead of those that arrive now.
        outbox.append(contentsOf: delayed)
        delayed.removeAll()
        let scratch = UnsafeMutablePointer<RawCompletion>.allocate(capacity: max(inner.completionCapacity, 1))
        defer { scratch.deallocate() }
        let count = inner.reap(into: scratch, limit: inner.completionCapacity)
        for index in 0..<count {
            if scratch[index].userData & Slot.cancelMarker == 0 && roll(plan.delayPercent) {
                delayed.append(scratch[index])
            } else {
                outbox.append(scratch[index])
            }
        }
        let handed = min(limit, outbox.count)
        for index in 0..<handed { buffer[index] = outbox[index] }
        outbox.removeFirst(handed)
        return handed
    }
}
