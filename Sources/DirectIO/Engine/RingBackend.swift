import CDirectIO
import Glibc
import SystemPackage

/// The io_uring backend: SQEs in, CQEs out, fixed buffers in a sparse table.
final class RingBackend: EngineBackend {
    /// The ring, behind a pointer: this object is used by one thread at a time, and a class
    /// stored property would pay a dynamic exclusivity check on every SQE and CQE.
    let ring: UnsafeMutablePointer<IORing>
    let opcodes: OpcodeSupport
    let fixedBufferSlots: Int
    let fixedFileSlots: Int
    /// Why the fixed-buffer or fixed-file table could not be registered, when it could not.
    let registrationNotes: [String]
    /// The completion of a waited request run as a system call (`enqueueWaited`), until
    /// `reap` hands it out; behind a pointer like the ring.
    private let waited: UnsafeMutablePointer<RawCompletion?>

    var kind: EngineKind { .ioUring }
    var submissionCapacity: Int { Int(ring.pointee.sq.entries) }
    var completionCapacity: Int { Int(ring.pointee.cq.entries) }
    var setupFlags: RingSetupFlags { ring.pointee.setupFlags }

    /// Opcodes without which the ring cannot serve DirectFile (READ/WRITE arrived in 5.6, the
    /// same release as the probe): on an older kernel the blocking engine is used instead.
    static let requiredOpcodes: [Opcode] = [.read, .write, .readv, .writev, .fsync, .nop, .asyncCancel]

    init(entries: UInt32, flags: RingSetupFlags, fixedBufferSlots wantedSlots: Int, fixedFileSlots wantedFiles: Int) throws(DirectIOError) {
        let ring: IORing
        do { ring = try IORing(entries: entries, flags: flags) } catch {
            // Recent kernels charge the ring's own memory to RLIMIT_MEMLOCK, as registered buffers
            // always were, for processes without CAP_IPC_LOCK (measured on 6.18: setup fails
            // with ENOMEM under a 4 KiB limit, works under 16 KiB): ENOMEM here is that limit.
            let hint = error == .noMemory
                ? "the ring's memory counts against RLIMIT_MEMLOCK (\(Sys.memlockLimit().map { "\($0 / 1024) KiB" } ?? "unlimited") here, shared by all of this user's rings and registered buffers): raise `ulimit -l` or systemd's LimitMEMLOCK="
                : nil
            throw .system(error, operation: "create io_uring", call: "io_uring_setup", detail: hint)
        }
        let opcodes: OpcodeSupport
        do { opcodes = try ring.probe() } catch {
            throw .system(error, operation: "probe io_uring opcodes", call: "io_uring_register(IORING_REGISTER_PROBE)")
        }
        let missing = Self.requiredOpcodes.filter { !opcodes.supports($0) }
        guard missing.isEmpty else {
            throw DirectIOError(.unsupported, operation: "create io_uring", detail: "kernel lacks \(missing.map(\.description).joined(separator: ", "))")
        }
        var slots = 0
        var notes: [String] = []
        if wantedSlots > 0 && opcodes.supports(.readFixed) && opcodes.supports(.writeFixed) {
            do {
                try ring.registerSparseBuffers(count: UInt32(wantedSlots))
                slots = wantedSlots
            } catch {
                notes.append("sparse fixed-buffer table refused (io_uring_register BUFFERS2: \(error)); needs Linux 5.19")
            }
        }
        var files = 0
        if wantedFiles > 0 {
            do {
                try ring.registerSparseFiles(count: UInt32(wantedFiles))
                files = wantedFiles
            } catch {
                notes.append("sparse fixed-file table refused (io_uring_register FILES2: \(error)); files are named by descriptor")
            }
        }
        // Close the ring on exec: nothing in a new program may use it.
        _ = try? Sys.fcntl(ring.fd, F_SETFD, FD_CLOEXEC)
        self.ring = .allocate(capacity: 1)
        self.ring.initialize(to: ring)
        self.opcodes = opcodes
        self.fixedBufferSlots = slots
        self.fixedFileSlots = files
        self.registrationNotes = notes
        waited = .allocate(capacity: 1)
        waited.initialize(to: nil)
    }

    deinit {
        ring.deinitialize(count: 1)
        ring.deallocate()
        waited.deinitialize(count: 1)
        waited.deallocate()
    }

    @inline(__always)
    func enqueue(_ op: IOOperation, userData: UInt64) -> Bool {
        guard let sqe = ring.pointee.sq.nextEntry() else { return false }
        switch op.opcode {
        case .read, .write, .readFixed, .writeFixed, .readv, .writev:
            sqe.prepareReadWrite(op.opcode, fd: op.fd, address: op.address, length: op.length, offset: op.offset, bufferIndex: op.bufferIndex, rwFlags: op.rwFlags)
        case .fsync:
            sqe.prepareFsync(fd: op.fd, dataOnly: op.dataOnly)
        case .fallocate:
            sqe.prepareFallocate(fd: op.fd, mode: op.mode, offset: op.offset, length: op.allocateLength)
        case .sendZeroCopy:
            sqe.prepareSendZeroCopy(fd: op.fd, address: op.address, length: op.length, bufferIndex: op.fixedBuffer ? op.bufferIndex : nil)
        case .nop, .asyncCancel, .splice:
            // Cancellation has its own entry point and the transfer layer splices with the
            // system call: neither reaches here from IOEngine, so queue a NOP that completes at once.
            sqe.prepareNop()
        }
        if op.fileSlot >= 0 {
            sqe.pointee.fd = op.fileSlot
            sqe.pointee.flags |= DIO_IOSQE_FIXED_FILE
        }
        sqe.pointee.user_data = userData
        return true
    }

    /// Writes, syncs and allocations a caller waits for run at once as system calls on its
    /// thread. io_uring hands the completion of every O_DIRECT write on ext4 and xfs to a
    /// kernel worker (iomap's dio workqueue: io_uring stopped completing them on the caller's
    /// side, IOCB_DIO_CALLER_COMP, in Linux 6.6) and runs fsync and fallocate on an io-wq
    /// thread, so each costs a thread wake-up that a caller blocked in pwrite or fdatasync
    /// does not pay: 4-5 µs per 4 KiB write at QD1 here (BENCHMARKS.md, "Synchronous writes as
    /// system calls"). Reads complete from the interrupt either way, and two of them overlap
    /// in the ring: they stay. The result is the system call's, in the ring's convention, so
    /// the engine treats it as it treats a CQE (a short write's rest goes through the ring).
    func enqueueWaited(_ op: IOOperation, userData: UInt64) -> Bool {
        guard waited.pointee == nil, op.opcode.runsAsSystemCallWhenWaited else { return enqueue(op, userData: userData) }
        waited.pointee = RawCompletion(userData: userData, result: BlockingBackend.perform(op), flags: RawCompletion.ranAsSystemCall)
        return true
    }

    func enqueueCancel(target: UInt64, userData: UInt64) -> Bool {
        guard let sqe = ring.pointee.sq.nextEntry() else { return false }
        sqe.prepareCancel(target: target)
        sqe.pointee.user_data = userData
        return true
    }

    /// How often io_uring_enter may answer EAGAIN/EBUSY with nothing to reap before the error
    /// is reported (each attempt yields the CPU first).
    static let busyRetryLimit = 100_000

    func submit(waitingFor minimum: Int) throws(Errno) {
        // A waited request's completion is already here: it counts towards `minimum`, and
        // with nothing queued the ring need not be entered for the caller to have it.
        if waited.pointee != nil {
            if minimum <= 1 && ring.pointee.sq.occupied == 0 { return }
            return try enter(waitingFor: max(minimum - 1, 0))
        }
        try enter(waitingFor: minimum)
    }

    private func enter(waitingFor minimum: Int) throws(Errno) {
        var busyRetries = 0
        while true {
            do {
                try ring.pointee.submit(waitingFor: minimum)
                return
            } catch .interrupted {
                // A signal interrupted the wait; whatever was submitted stays submitted.
                if ring.pointee.cq.ready >= UInt32(minimum) { return }
            } catch .resourceTemporarilyUnavailable, .resourceBusy {
                // The kernel is short of request memory or holds overflowed CQEs (liburing#281):
                // the caller reaps what is ready; if nothing is, yield before retrying.
                if ring.pointee.cq.ready > 0 { return }
                busyRetries += 1
                if busyRetries > Self.busyRetryLimit { throw .resourceTemporarilyUnavailable }
                sched_yield()
            }
        }
    }

    @inline(__always)
    func reap(into buffer: UnsafeMutablePointer<RawCompletion>, limit: Int) -> Int {
        if limit > 0, let completion = waited.pointee {
            buffer.pointee = completion
            waited.pointee = nil
            return 1 + ring.pointee.reap(into: buffer + 1, limit: limit - 1)
        }
        return ring.pointee.reap(into: buffer, limit: limit)
    }

    func supports(_ opcode: Opcode) -> Bool { opcodes.supports(opcode) }

    func updateFixedBuffers(first: Int, regions: [iovec]) throws(Errno) {
        try ring.pointee.updateBuffers(first: UInt32(first), regions: regions)
    }

    func updateFixedFiles(first: Int, fds: [Int32]) throws(Errno) {
        try ring.pointee.updateFiles(first: UInt32(first), fds: fds)
    }

    /// `IORing.registerDescriptor`: for a ring its creating thread alone uses and drops.
    func registerDescriptor() -> Bool { ring.pointee.registerDescriptor() }

    func cloneFixedBuffers(from sourceRing: Int32, sourceFirst: Int, first: Int, count: Int) throws(Errno) {
        try ring.pointee.cloneBuffers(from: sourceRing, sourceFirst: UInt32(sourceFirst), first: UInt32(first), count: UInt32(count))
    }
}
