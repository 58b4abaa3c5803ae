import CDirectIO
import Glibc
import SystemPackage

/// Ring setup flags DirectIO knows how to use (IORING_SETUP_* in include/uapi/linux/io_uring.h).
package struct RingSetupFlags: OptionSet, Sendable, CustomStringConvertible {
    package let rawValue: UInt32
    package init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Size the CQ ourselves (2× the SQ), so more requests can be in flight than the SQ holds.
    package static let completionQueueSize = RingSetupFlags(rawValue: IORING_SETUP_CQSIZE)
    /// Keep submitting a batch past a failed SQE; the failure arrives as that SQE's CQE.
    package static let submitAll = RingSetupFlags(rawValue: IORING_SETUP_SUBMIT_ALL)
    /// Do not interrupt the task to run completion work; it runs at the next io_uring_enter.
    package static let cooperativeTaskRun = RingSetupFlags(rawValue: IORING_SETUP_COOP_TASKRUN)
    /// Only the creating thread submits (lets the kernel skip locking).
    package static let singleIssuer = RingSetupFlags(rawValue: IORING_SETUP_SINGLE_ISSUER)
    /// Completion work runs only when the issuer waits for completions.
    package static let deferTaskRun = RingSetupFlags(rawValue: IORING_SETUP_DEFER_TASKRUN)
    /// No indirection array between the SQ ring and the SQEs (6.6+): the kernel takes SQE
    /// `tail & mask` directly, one less load and store per request.
    package static let noSubmissionArray = RingSetupFlags(rawValue: IORING_SETUP_NO_SQARRAY)

    /// What fio 3.33 sets (engines/io_uring.c, fio_ioring_queue_init), and NO_SQARRAY: the
    /// fastest setup, for a ring used by one thread only. SINGLE_ISSUER makes the kernel reject
    /// use from any other thread with EEXIST, and DEFER_TASKRUN delivers completions only to
    /// that thread.
    package static let threadPerCore: RingSetupFlags = [.completionQueueSize, .submitAll, .cooperativeTaskRun, .singleIssuer, .deferTaskRun, .noSubmissionArray]
    /// Safe from any thread, one at a time: completions are delivered by task work that
    /// interrupts the submitter, so a waiter on another thread is never starved.
    package static let anyThread: RingSetupFlags = [.completionQueueSize, .submitAll, .noSubmissionArray]

    package var description: String {
        var names: [String] = []
        if contains(.completionQueueSize) { names.append("CQSIZE") }
        if contains(.submitAll) { names.append("SUBMIT_ALL") }
        if contains(.cooperativeTaskRun) { names.append("COOP_TASKRUN") }
        if contains(.singleIssuer) { names.append("SINGLE_ISSUER") }
        if contains(.deferTaskRun) { names.append("DEFER_TASKRUN") }
        if contains(.noSubmissionArray) { names.append("NO_SQARRAY") }
        return names.isEmpty ? "none" : names.joined(separator: "|")
    }
}

/// An io_uring instance: the descriptor and its three shared mappings (SQ ring, CQ ring, SQEs).
///
/// It owns the mappings and the descriptor; dropping it unmaps and closes. It knows nothing of
/// what the requests mean: that is the engine's business. Its owner must have reaped every
/// completion for memory it handed to the kernel before dropping it (closing the ring cancels
/// requests, but the kernel may still be writing into their buffers until they finish).
struct IORing: ~Copyable {
    let fd: Int32
    /// The setup flags the kernel accepted (a subset of what was asked).
    let setupFlags: RingSetupFlags
    let features: UInt32
    var sq: SubmissionQueue
    var cq: CompletionQueue
    private let sqRing: UnsafeMutableRawPointer
    private let sqRingBytes: Int
    /// nil when the kernel maps SQ and CQ rings together (IORING_FEAT_SINGLE_MMAP, 5.4+).
    private let cqRing: UnsafeMutableRawPointer?
    private let cqRingBytes: Int
    private let sqeArray: UnsafeMutableRawPointer
    private let sqeArrayBytes: Int

    /// Creates a ring with `entries` SQEs and `2 × entries` CQEs. Asks for `flags`; when the
    /// kernel rejects them (EINVAL: a flag newer than the kernel), retries with fewer, in the
    /// order the flags arrived in Linux, so the result is the best this kernel offers.
    init(entries: UInt32, flags wanted: RingSetupFlags) throws(Errno) {
        var attempts: [RingSetupFlags] = [wanted]
        for dropped in [RingSetupFlags.noSubmissionArray, RingSetupFlags.deferTaskRun.union(.singleIssuer), .cooperativeTaskRun, .submitAll, .completionQueueSize] {
            let next = attempts[attempts.count - 1].subtracting(dropped)
            if next != attempts[attempts.count - 1] { attempts.append(next) }
        }
        var params = dio_uring_params()
        var ringFD: Int32 = -1
        var accepted = RingSetupFlags()
        var lastError = Errno.invalidArgument
        for flags in attempts {
            params = dio_uring_params()
            params.flags = flags.rawValue
            if flags.contains(.completionQueueSize) { params.cq_entries = entries * 2 }
            do {
                ringFD = try Sys.ioUringSetup(entries: entries, params: &params)
                accepted = flags
                break
            } catch {
                lastError = error
                if error != .invalidArgument { throw error }
            }
        }
        guard ringFD >= 0 else { throw lastError }

        // Map in locals first: a ~Copyable value with a deinit cannot be left half-built.
        let singleMap = params.features & IORING_FEAT_SINGLE_MMAP != 0
        var sqBytes = Int(params.sq_off.array) + Int(params.sq_entries) * MemoryLayout<UInt32>.stride
        let cqBytes = Int(params.cq_off.cqes) + Int(params.cq_entries) * MemoryLayout<dio_cqe>.stride
        if singleMap { sqBytes = max(sqBytes, cqBytes) }
        let sqesBytes = Int(params.sq_entries) * MemoryLayout<dio_sqe>.stride
        let shared = MAP_SHARED | MAP_POPULATE
        let sqMapping: UnsafeMutableRawPointer
        do {
            sqMapping = try Sys.mmap(length: sqBytes, flags: shared, fd: ringFD, offset: Int64(DIO_IORING_OFF_SQ_RING))
        } catch {
            _ = try? Sys.close(ringFD)
            throw error
        }
        var cqMapping: UnsafeMutableRawPointer? = nil
        if !singleMap {
            do {
                cqMapping = try Sys.mmap(length: cqBytes, flags: shared, fd: ringFD, offset: Int64(DIO_IORING_OFF_CQ_RING))
            } catch {
                _ = try? Sys.munmap(sqMapping, sqBytes)
                _ = try? Sys.close(ringFD)
                throw error
            }
        }
        let sqesMapping: UnsafeMutableRawPointer
        do {
            sqesMapping = try Sys.mmap(length: sqesBytes, flags: shared, fd: ringFD, offset: Int64(DIO_IORING_OFF_SQES))
        } catch {
            _ = try? Sys.munmap(sqMapping, sqBytes)
            if let cqMapping { _ = try? Sys.munmap(cqMapping, cqBytes) }
            _ = try? Sys.close(ringFD)
            throw error
        }

        fd = ringFD
        setupFlags = accepted
        features = params.features
        sqRing = sqMapping
        sqRingBytes = sqBytes
        cqRing = cqMapping
        cqRingBytes = cqBytes
        sqeArray = sqesMapping
        sqeArrayBytes = sqesBytes
        sq = SubmissionQueue(ring: sqMapping, offsets: params.sq_off, sqes: sqesMapping.assumingMemoryBound(to: dio_sqe.self),
                             hasIndexArray: !accepted.contains(.noSubmissionArray))
        cq = CompletionQueue(ring: cqMapping ?? sqMapping, offsets: params.cq_off)
    }

    /// The ring's index among the registered ring descriptors of the thread that registered it
    /// (`registerDescriptor`), and that thread.
    private var registered: (index: UInt32, thread: UInt)?

    /// Registers the descriptor with the calling thread (IORING_REGISTER_RING_FDS, 5.18+), so
    /// its io_uring_enter calls skip the file-table lookup and reference count: for a ring one
    /// thread uses from creation to destruction (a runtime's worker). Only that thread may
    /// enter the ring afterwards; deinit unregisters it there. False where the kernel refuses.
    mutating func registerDescriptor() -> Bool {
        guard registered == nil else { return true }
        var update = dio_rsrc_update2()
        update.offset = UInt32.max  // any free index
        update.data = UInt64(UInt32(bitPattern: fd))
        guard (try? Sys.ioUringRegister(fd, opcode: RegisterOpcode.registerRingFDs.rawValue, arg: &update, count: 1)) == 1 else { return false }
        registered = (update.offset, Sys.currentThread())
        return true
    }

    deinit {
        // A registered descriptor holds the ring open: unregister it (only its thread can).
        // Elsewhere the ring stays until that thread exits, which `registerDescriptor`'s
        // callers rule out by dropping the ring on the thread that registered it.
        if let registered, registered.thread == Sys.currentThread() {
            var update = dio_rsrc_update2()
            update.offset = registered.index
            _ = try? Sys.ioUringRegister(fd, opcode: RegisterOpcode.unregisterRingFDs.rawValue, arg: &update, count: 1)
        }
        // munmap and close fail only for arguments this type never passes.
        _ = try? Sys.munmap(sqeArray, sqeArrayBytes)
        if let cqRing { _ = try? Sys.munmap(cqRing, cqRingBytes) }
        _ = try? Sys.munmap(sqRing, sqRingBytes)
        _ = try? Sys.close(fd)
    }

    /// Whether completions may be dropped when the CQ is full (kernels before 5.5).
    var mayDropCompletions: Bool { features & IORING_FEAT_NODROP == 0 }

    /// Publishes prepared SQEs and calls io_uring_enter when there is anything to submit, a
    /// completion to wait for, or kernel-side work (overflowed CQEs, deferred task work) that
    /// only an enter runs. Returns how many SQEs the kernel consumed.
    ///
    /// Errors are the raw errno: EINTR (a signal arrived while waiting: check the CQ and call
    /// again), EAGAIN/EBUSY (the kernel is short of request memory or holds overflowed
    /// completions: reap, then retry), or a real failure.
    @discardableResult
    mutating func submit(waitingFor minimum: Int = 0) throws(Errno) -> Int {
        let toSubmit = sq.publish()
        let kernelFlags = sq.kernelFlags
        // Without DEFER_TASKRUN the kernel posts completions on its own; with it, and whenever
        // completions sit in the overflow list, only an enter with GETEVENTS moves them to the CQ.
        let needsKernel = kernelFlags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN) != 0
            || setupFlags.contains(.deferTaskRun)
        let wait = UInt32(max(0, minimum))
        if toSubmit == 0 && wait == 0 && !needsKernel { return 0 }
        var enterFlags: UInt32 = 0
        if wait > 0 || needsKernel { enterFlags |= IORING_ENTER_GETEVENTS }
        if let registered {
            return try Sys.ioUringEnter(Int32(bitPattern: registered.index), toSubmit: toSubmit, minComplete: wait, flags: enterFlags | IORING_ENTER_REGISTERED_RING)
        }
        return try Sys.ioUringEnter(fd, toSubmit: toSubmit, minComplete: wait, flags: enterFlags)
    }

    /// Copies up to `limit` posted completions to `buffer` and frees their slots. Returns the count.
    @inline(__always)
    func reap(into buffer: UnsafeMutablePointer<RawCompletion>, limit: Int) -> Int {
        cq.consume(into: buffer, limit: limit)
    }

    /// Hands every posted completion to `body` and frees its slot. Returns the count.
    mutating func reap(_ body: (RawCompletion) -> Void) -> Int {
        let buffer = UnsafeMutablePointer<RawCompletion>.allocate(capacity: Int(cq.entries))
        defer { buffer.deallocate() }
        let count = reap(into: buffer, limit: Int(cq.entries))
        for index in 0..<count { body(buffer[index]) }
        return count
    }
}
