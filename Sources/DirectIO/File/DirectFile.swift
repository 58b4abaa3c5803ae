import CDirectIO
import Glibc
import SystemPackage

/// A file or block device opened for direct I/O: reads and writes go between the caller's
/// memory and the device, without the page cache and without copies.
///
/// Direct I/O has rules the kernel enforces with EINVAL: buffer addresses, file offsets and
/// lengths must be multiples of the device's alignments (`limits`). This type checks them
/// before submitting and names the broken limit in the error. Pool buffers and
/// `AlignedBuffer`s are page-aligned, so they satisfy the memory rule everywhere.
///
/// The file owns its descriptor (it is `~Copyable`; dropping it closes the descriptor). It
/// submits through an `IOEngine`, shared with other files when passed in.
public struct DirectFile: ~Copyable {
    public let path: String
    private let owner: DescriptorOwner
    /// The open file descriptor; valid while this value lives.
    public var descriptor: Int32 { owner.fd }
    /// The descriptor's slot in the engine's fixed-file table, or -1.
    var fileSlot: Int32 { owner.fileSlot }
    /// The device's limits for this file.
    public let limits: DeviceLimits
    /// Whether I/O bypasses the page cache (O_DIRECT is set).
    public let isDirect: Bool
    /// With `.preferred`, why direct I/O is not in use.
    public let fallbackNote: String?
    public let engine: IOEngine
    /// Argument checks and error wording, shared with `AsyncFile`.
    let rules: FileRules
    var alignment: AlignmentCheck { rules.alignment }
    /// Whether requests that break the alignment are bounced (else refused).
    let bouncesMisaligned: Bool
    /// The caller's bounce pool, if it passed one; else the engine's.
    let sharedBouncePool: BufferPool?
    let waitsForBounceBuffers: Bool
    let counters = TransferCounters()

    /// What this file's transfers have done so far (the engine keeps the same counts over all
    /// its files).
    public var statistics: TransferStatistics { counters.totals }

    /// Counts bytes in this file's and the engine's statistics.
    func record(_ moved: TransferStatistics) {
        counters.totals.add(moved)
        engine.record(moved)
    }
    let identity: Identity

    /// Opens `path`.
    /// - Parameters:
    ///   - path: the file or block device.
    ///   - options: how to open it (access, O_DIRECT required or preferred, misaligned requests).
    ///   - engine: the engine to submit through; nil creates one for this file alone.
    public init(path: String, options: OpenOptions = OpenOptions(), engine: IOEngine? = nil) throws(DirectIOError) {
        let engine: IOEngine = if let engine { engine } else { try IOEngine() }
        let opened = try OpenedDescriptor.open(path: path, options: options)
        self.identity = opened.identity
        self.bouncesMisaligned = options.misaligned == .bounce
        self.sharedBouncePool = options.bouncePool
        self.waitsForBounceBuffers = options.waitForBounceBuffers
        if let note = opened.fallbackNote {
            engine.recordBufferedFallback()
            engine.logger?.info("direct I/O refused: using the page cache", metadata: ["directio.path": "\(path)", "directio.reason": "\(note)"])
        }
        self.path = path
        self.owner = DescriptorOwner(fd: opened.fd, fileSlot: engine.fileSlot(for: opened.fd), engine: engine)
        // The engine's device may be simulated, with limits of its own.
        let limits = engine.backend.limits(for: opened.limits)
        self.limits = limits
        self.isDirect = opened.isDirect
        self.fallbackNote = opened.fallbackNote
        self.engine = engine
        self.rules = FileRules(path: path, limits: limits, isDirect: opened.isDirect)
    }

    /// Closes the descriptor, reporting errors (close can report a deferred write error on
    /// some filesystems, e.g. NFS). Dropping the file closes it too, silently.
    public consuming func close() throws(DirectIOError) {
        let path = path
        do { try owner.close() } catch {
            throw .system(error, operation: "close", call: "close", path: path)
        }
    }

    // MARK: Size and space

    /// The file's size in bytes (for a block device, the device's capacity).
    public func size() throws(DirectIOError) -> Int64 {
        try rules.size(of: descriptor, operation: "size")
    }

    /// Cuts the file to `size` bytes (ftruncate); not for block devices.
    package func truncate(to size: Int64) throws(DirectIOError) {
        do { try Sys.ftruncate(descriptor, size) } catch {
            throw .system(error, operation: "truncate", call: "ftruncate", path: path, offset: size)
        }
    }

    /// Allocates disk space for `length` bytes at `offset` so later writes there cannot fail
    /// with ENOSPC (fallocate). With `keepSize`, the file's size does not change.
    public func preallocate(offset: Int64, length: Int64, keepSize: Bool = false) throws(DirectIOError) {
        guard offset >= 0, length > 0 else {
            throw DirectIOError(.invalidArgument, operation: "preallocate", path: path, offset: offset, length: Int(length), detail: "offset must be non-negative and length positive")
        }
        let operation = IOOperation.fallocate(fd: descriptor, fileSlot: fileSlot, mode: keepSize ? DIO_FALLOC_FL_KEEP_SIZE : 0, offset: offset, length: length)
        let outcome = try engine.supports(.fallocate) ? engine.perform(operation) : IOOutcome(bytes: 0, errno: Self.errno(of: BlockingBackend.perform(operation)))
        if let errno = outcome.errno {
            throw .system(errno, operation: "preallocate", call: RequestCarrier(engine.kind, waited: true).name(of: operation), path: path, offset: offset, length: Int(length))
        }
    }

    /// Drops the file's pages from the page cache (posix_fadvise POSIX_FADV_DONTNEED), so the
    /// next buffered reads go to the device: what fio's `invalidate=1` does before each job.
    public func dropCachedPages() throws(DirectIOError) {
        do { try Sys.dropCachedPages(descriptor) } catch {
            throw .system(error, operation: "drop cached pages", call: "posix_fadvise", path: path)
        }
    }

    /// Makes written data durable: fsync, or fdatasync with `dataOnly` (the data and the
    /// metadata needed to read it back, not timestamps).
    public func sync(dataOnly: Bool = false) throws(DirectIOError) {
        let operation = IOOperation.fsync(fd: descriptor, fileSlot: fileSlot, dataOnly: dataOnly)
        let outcome = try engine.perform(operation)
        if let errno = outcome.errno {
            throw .system(errno, operation: dataOnly ? "data sync" : "sync", call: RequestCarrier(engine.kind, waited: true).name(of: operation), path: path)
        }
    }

    private static func errno(of result: Int32) -> Errno? { result < 0 ? Errno(rawValue: -result) : nil }
}

/// The single owner of a file descriptor and its fixed-file slot: releases both when dropped.
struct DescriptorOwner: ~Copyable {
    private(set) var fd: Int32
    private(set) var fileSlot: Int32
    let engine: IOEngine

    init(fd: Int32, fileSlot: Int32, engine: IOEngine) {
        self.fd = fd
        self.fileSlot = fileSlot
        self.engine = engine
    }

    /// Releases the slot and closes, reporting close's error. `discard self` is not available
    /// to a type holding a class reference, so the fields are cleared for `deinit` to skip.
    consuming func close() throws(Errno) {
        engine.forgetFile(fd)
        let descriptor = fd
        fd = -1
        fileSlot = -1
        try Sys.close(descriptor)
    }

    deinit {
        guard fd >= 0 else { return }
        engine.forgetFile(fd)
        // Synchronous requests have completed before their calls returned; a batched request
        // still in flight on this descriptor keeps the open file alive in the kernel and fails
        // or completes normally, so closing here never exposes memory.
        _ = try? Sys.close(fd)
    }
}
