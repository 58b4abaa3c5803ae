import Glibc
import SystemPackage

/// Which kernel interface carries the I/O.
package enum EngineKind: String, Sendable, CustomStringConvertible {
    /// io_uring: requests queued in shared memory, many in flight per system call.
    case ioUring = "io_uring"
    /// pread/pwrite/preadv/pwritev/fsync, one request at a time: the fallback where io_uring is
    /// unavailable (ENOSYS, or EPERM from seccomp or kernel.io_uring_disabled).
    case blocking
    /// An in-memory device standing in for the kernel (DirectIOTesting's `MemoryDevice`):
    /// requests complete from memory, files on disk are never touched.
    case memory

    package var description: String { rawValue }
}

/// The kernel-facing half of an engine: queue operations, submit them, collect raw results.
/// Everything else (request state, retries, buffer ownership) is `IOEngine`'s, so both
/// backends behave identically above this line.
package protocol EngineBackend: AnyObject {
    var kind: EngineKind { get }
    /// Operations that can be queued before `submit` must be called.
    var submissionCapacity: Int { get }

    /// Queues `operation`; false when the submission queue is full (submit first).
    func enqueue(_ operation: IOOperation, userData: UInt64) -> Bool

    /// Queues `operation` for a caller that blocks until it completes (a synchronous call);
    /// false as for `enqueue`. A backend may carry it out at once instead, on the caller's
    /// thread, and hand its completion out at the next `reap`.
    func enqueueWaited(_ operation: IOOperation, userData: UInt64) -> Bool

    /// Queues a cancellation of the request with `target` user data.
    func enqueueCancel(target: UInt64, userData: UInt64) -> Bool

    /// Submits everything queued and waits until at least `minimum` completions are ready.
    /// EINTR and EAGAIN/EBUSY are handled here; what is thrown is a real failure.
    func submit(waitingFor minimum: Int) throws(Errno)

    /// Most completions that can be ready at once (the CQ size).
    var completionCapacity: Int { get }

    /// Copies up to `limit` ready completions to `buffer`, frees their slots, returns the count.
    func reap(into buffer: UnsafeMutablePointer<RawCompletion>, limit: Int) -> Int

    func supports(_ opcode: Opcode) -> Bool

    /// Fixed-buffer slots available for pools, 0 when the backend has none.
    var fixedBufferSlots: Int { get }

    /// Points fixed-buffer slots `first...` at `regions` (empty regions clear slots).
    func updateFixedBuffers(first: Int, regions: [iovec]) throws(Errno)
    /// Points `count` fixed-buffer slots from `first` at those from `sourceFirst` of the ring
    /// `sourceRing`, sharing its pinned pages (`IORing.cloneBuffers`).
    func cloneFixedBuffers(from sourceRing: Int32, sourceFirst: Int, first: Int, count: Int) throws(Errno)

    /// Fixed-file slots available, 0 when the backend has none.
    var fixedFileSlots: Int { get }

    /// Points fixed-file slots `first...` at `fds` (-1 clears a slot).
    func updateFixedFiles(first: Int, fds: [Int32]) throws(Errno)

    /// What the device behind this backend supports, for a file whose kernel-reported limits
    /// are `limits`: the kernel's own backends change nothing; a simulated device says what
    /// it simulates (atomic write units).
    func limits(for limits: DeviceLimits) -> DeviceLimits
}

extension EngineBackend {
    package func enqueueWaited(_ operation: IOOperation, userData: UInt64) -> Bool { enqueue(operation, userData: userData) }
    package func limits(for limits: DeviceLimits) -> DeviceLimits { limits }
    /// Only rings share buffer tables.
    package func cloneFixedBuffers(from sourceRing: Int32, sourceFirst: Int, first: Int, count: Int) throws(Errno) { throw .notSupported }
}

/// A backend that changes a few of another backend's answers (fault injection, test doubles)
/// and passes everything else through: adopters implement only what they change.
package protocol WrappingBackend: EngineBackend {
    var inner: any EngineBackend { get }
}

extension WrappingBackend {
    package var kind: EngineKind { inner.kind }
    package var submissionCapacity: Int { inner.submissionCapacity }
    package var completionCapacity: Int { inner.completionCapacity }
    package var fixedBufferSlots: Int { inner.fixedBufferSlots }
    package var fixedFileSlots: Int { inner.fixedFileSlots }
    package func enqueue(_ operation: IOOperation, userData: UInt64) -> Bool { inner.enqueue(operation, userData: userData) }
    package func enqueueCancel(target: UInt64, userData: UInt64) -> Bool { inner.enqueueCancel(target: target, userData: userData) }
    /// Through this wrapper's own `enqueue`, so what it changes applies: a wrapper that also
    /// wants the inner backend's way with waited requests says so itself.
    package func enqueueWaited(_ operation: IOOperation, userData: UInt64) -> Bool { enqueue(operation, userData: userData) }
    package func submit(waitingFor minimum: Int) throws(Errno) { try inner.submit(waitingFor: minimum) }
    package func reap(into buffer: UnsafeMutablePointer<RawCompletion>, limit: Int) -> Int { inner.reap(into: buffer, limit: limit) }
    package func supports(_ opcode: Opcode) -> Bool { inner.supports(opcode) }
    package func updateFixedBuffers(first: Int, regions: [iovec]) throws(Errno) { try inner.updateFixedBuffers(first: first, regions: regions) }
    package func updateFixedFiles(first: Int, fds: [Int32]) throws(Errno) { try inner.updateFixedFiles(first: first, fds: fds) }
    package func cloneFixedBuffers(from sourceRing: Int32, sourceFirst: Int, first: Int, count: Int) throws(Errno) {
        try inner.cloneFixedBuffers(from: sourceRing, sourceFirst: sourceFirst, first: first, count: count)
    }
    package func limits(for limits: DeviceLimits) -> DeviceLimits { inner.limits(for: limits) }
}
