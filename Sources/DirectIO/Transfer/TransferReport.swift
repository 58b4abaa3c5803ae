/// What a transfer did and how.
import SystemPackage
public struct TransferReport: Sendable {
    /// The strategy that moved the bytes (the last one, if a fallback happened midway).
    public var strategy: TransferStrategy
    /// Strategies that moved some of the bytes, in order (one, unless a path failed midway).
    public var strategiesUsed: [TransferStrategy]
    public var bytes: Int64
    /// Bytes that passed through user memory: 0 for every path but `buffered`.
    public var userSpaceCopies: Int64
    /// Strategies tried or passed over before `strategy`, with the reason, in order.
    public var skipped: [(strategy: TransferStrategy, reason: String)]
    /// Holes of the source kept as holes in the destination, and their bytes.
    public var holes: Int
    public var holeBytes: Int64
    /// SEND_ZC: sends made, and how many of them the kernel copied after all (notification
    /// with IORING_NOTIF_USAGE_ZC_COPIED: loopback, or a NIC without scatter-gather).
    public var zeroCopySends: Int
    public var zeroCopySendsCopied: Int
    public var seconds: Double
    /// `Transfer.copyFile` only: the file written (DST, or DST/name of SRC when DST is a
    /// directory), whether a file already there was replaced, and whether the destination is
    /// a block device written in place (it cannot be renamed over).
    public var destination: String? = nil
    public var replacedExisting = false
    public var inPlace = false

    public var bytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds : 0 }
}
