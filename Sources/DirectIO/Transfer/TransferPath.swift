import SystemPackage

/// One way of moving bytes (a `TransferStrategy`), set up once per transfer and then asked to
/// move one range at a time.
protocol TransferPath: AnyObject {
    var strategy: TransferStrategy { get }
    /// Moves `range` and returns the bytes moved: fewer than `range.count` only when the
    /// source ends first. Reports each chunk to `meter`, which may cancel.
    func move(_ range: TransferRange, meter: inout TransferMeter) throws(PathFailure) -> Int64
}

/// A byte range to move: offsets are ignored on streams (sockets, pipes), and a nil count
/// means "until the source ends".
struct TransferRange {
    var sourceOffset: Int64
    var destinationOffset: Int64
    var count: Int64?

    /// The range after its first `bytes` have moved.
    func advanced(by bytes: Int64) -> TransferRange {
        TransferRange(sourceOffset: sourceOffset + bytes, destinationOffset: destinationOffset + bytes, count: count.map { $0 - bytes })
    }

    /// The most bytes to move next in chunks of `limit`.
    func chunk(after moved: Int64, limit: Int) -> Int {
        guard let count else { return limit }
        return Int(min(Int64(limit), count - moved))
    }
}

/// Why a path stopped.
enum PathFailure: Error {
    /// The path cannot serve this pair (the kernel or filesystem refused its first call):
    /// fall back to the next one, which continues after the `moved` bytes this one managed.
    case unsupported(String, moved: Int64)
    /// A real failure (ENOSPC, EIO, cancellation): the transfer stops with it.
    case failed(DirectIOError)

    /// Errnos that mean "this call cannot do this" rather than "this I/O failed".
    static func isUnsupported(_ errno: Errno) -> Bool {
        switch errno {
        case .invalidArgument, .improperLink, .notSupported, .noFunction, .notSupportedOnSocket, .inappropriateIOCTLForDevice, .badFileDescriptor:
            true
        default:
            false
        }
    }
}

/// Counts progress, calls the caller's progress handler and notices cancellation.
struct TransferMeter {
    private(set) var done: Int64 = 0
    let total: Int64?
    let options: TransferOptions
    let destination: String

    init(total: Int64?, options: TransferOptions, destination: String) {
        self.total = total
        self.options = options
        self.destination = destination
    }

    /// Counts `bytes` moved, ending at `offset` of the destination; throws `.cancelled` once
    /// the caller has cancelled.
    mutating func moved(_ bytes: Int64, reaching offset: Int64) throws(PathFailure) {
        done += bytes
        options.progress?(done, total)
        try checkCancelled(at: offset)
    }

    /// Reports the bytes between `reported` and `done`, if any, and moves `reported` up: the
    /// failure to stop with if the caller has cancelled, else nil.
    mutating func catchUp(to done: Int64, reported: inout Int64, reaching offset: Int64) -> PathFailure? {
        guard done > reported else { return nil }
        defer { reported = done }
        do { try moved(done - reported, reaching: offset) } catch { return error }
        return nil
    }

    func checkCancelled(at offset: Int64) throws(PathFailure) {
        if options.cancellation?.isCancelled == true {
            throw .failed(DirectIOError(.cancelled, operation: "transfer", path: destination, offset: offset, detail: "\(done) bytes had been moved"))
        }
    }
}

extension PathFailure {
    /// A failed system call: unsupported-class errnos before any byte moved fall back, the rest fail.
    static func from(_ errno: Errno, call: String, moved: Int64, strategy: TransferStrategy, destination: String, offset: Int64, detail: String? = nil) -> PathFailure {
        if isUnsupported(errno) {
            return .unsupported("\(call): \(errno)" + (detail.map { " (\($0))" } ?? ""), moved: moved)
        }
        return .failed(.system(errno, operation: "transfer (\(strategy))", call: call, path: destination, offset: offset, detail: detail))
    }
}

extension DirectIOError {
    /// The same error naming `path`: errors from files reopened by /proc/self/fd name the
    /// caller's path instead.
    func naming(_ path: String) -> DirectIOError {
        var error = self
        error.path = path
        return error
    }
}

extension IOEngine {
    /// Reaps and drops `outstanding` batched requests: what a path does before it returns,
    /// whatever happened, so no buffer leaves it while the kernel may still use it. Stops only
    /// if the ring is broken, when the engine keeps the buffers for good instead.
    func drain(_ outstanding: inout Int) {
        while outstanding > 0 {
            do { try reap(minimum: 1) { _ in outstanding -= 1 } } catch { return }
        }
    }
}
