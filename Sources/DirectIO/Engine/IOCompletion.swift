import SystemPackage

/// The outcome of one request, as the engine reports it to whoever submitted it.
package struct IOOutcome: Sendable, Equatable {
    /// Bytes moved (for a failed request, those moved before the failure).
    package var bytes: Int
    /// The error that ended the request, or nil on success. EOF is not an error: a read at or
    /// past the end succeeds with fewer bytes than asked.
    package var errno: Errno?
    /// SEND_ZC only: the kernel copied the data after all (the notification's
    /// IORING_NOTIF_USAGE_ZC_COPIED, e.g. over loopback or a device without scatter-gather).
    package var copiedByKernel = false

    package init(bytes: Int, errno: Errno?, copiedByKernel: Bool = false) {
        self.bytes = bytes
        self.errno = errno
        self.copiedByKernel = copiedByKernel
    }

    package var succeeded: Bool { errno == nil }
}

/// A finished batched request: its tag, its outcome, and the buffer the engine held for it,
/// handed back now that the kernel is done with it.
public struct IOCompletion: ~Copyable {
    /// The value passed when the request was submitted.
    public let tag: UInt64
    package let opcode: Opcode
    /// The file offset the request started at.
    public let offset: Int64
    package let outcome: IOOutcome
    /// Bytes moved (for a failed request, those moved before the failure; fewer than asked
    /// for a read only at end of file).
    public var bytes: Int { outcome.bytes }
    /// The error that ended the request, or nil on success (end of file is not an error).
    public var errno: Errno? { outcome.errno }
    /// The request's buffer, owned by the caller again.
    public var buffer: PoolBuffer?

    /// Takes the buffer out of the completion.
    public mutating func takeBuffer() -> PoolBuffer? {
        buffer.take()
    }
}
