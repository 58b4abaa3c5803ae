import Logging
import Synchronization
import SystemPackage

/// How a transfer runs.
public struct TransferOptions: Sendable {
    /// A strategy to use alone (failing if it cannot serve the pair), or nil to try the
    /// cheapest first and fall back in order.
    public var strategy: TransferStrategy?
    /// Keep the source's holes (SEEK_DATA/SEEK_HOLE) when the destination is a regular file:
    /// only data is copied, and holes stay holes.
    public var keepHoles: Bool
    /// Buffers in flight for the `direct` and `send-zc` paths, and the bytes of each.
    public var buffers: Int
    public var bufferBytes: Int
    /// Called after each chunk with the bytes moved so far and the total (nil for a stream
    /// of unknown length). Called on the transferring thread.
    public var progress: (@Sendable (_ done: Int64, _ total: Int64?) -> Void)?
    /// Set it from any thread to stop the transfer at the next chunk with `.cancelled`.
    public var cancellation: TransferCancellation?
    /// Where the transfer says which paths it took (debug), and, at info, when a path it
    /// started on failed and it fell back to the next (metadata keys `directio.*`).
    public var logger: Logger?

    public init(strategy: TransferStrategy? = nil, keepHoles: Bool = true, buffers: Int = 8, bufferBytes: Int = 1 << 20,
                progress: (@Sendable (Int64, Int64?) -> Void)? = nil, cancellation: TransferCancellation? = nil, logger: Logger? = nil) {
        self.logger = logger
        self.strategy = strategy
        self.keepHoles = keepHoles
        self.buffers = buffers
        self.bufferBytes = bufferBytes
        self.progress = progress
        self.cancellation = cancellation
    }
}

/// A flag that stops a transfer: `cancel()` from any thread (a signal handler's thread, a
/// timeout task); the transfer notices between chunks, waits for what it has in flight, and
/// throws `.cancelled` naming the offset it reached.
public final class TransferCancellation: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    public func cancel() { flag.store(true, ordering: .releasing) }

    public var isCancelled: Bool { flag.load(ordering: .acquiring) }
}
