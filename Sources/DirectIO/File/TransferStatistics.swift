import Synchronization

/// What one file's transfers did: how many caller bytes the device reached directly, and how
/// many had to be copied or moved because of alignment.
public struct TransferStatistics: Sendable, Equatable {
    /// Caller bytes moved by DMA (including bytes later slid into place).
    public var bytesDirect = 0
    /// Caller bytes copied through bounce buffers.
    public var bytesBounced = 0
    /// Caller bytes slid inside their own pool buffer around a DMA (batched misaligned memory).
    public var bytesShifted = 0
    /// Blocks read before being written back with the caller's bytes over them.
    public var readModifyWriteBlocks = 0
    /// Transfers that found every bounce buffer in use and waited for one.
    public var bounceWaits = 0

    public init(bytesDirect: Int = 0, bytesBounced: Int = 0, bytesShifted: Int = 0, readModifyWriteBlocks: Int = 0, bounceWaits: Int = 0) {
        self.bytesDirect = bytesDirect
        self.bytesBounced = bytesBounced
        self.bytesShifted = bytesShifted
        self.readModifyWriteBlocks = readModifyWriteBlocks
        self.bounceWaits = bounceWaits
    }

    mutating func add(_ other: TransferStatistics) {
        bytesDirect += other.bytesDirect
        bytesBounced += other.bytesBounced
        bytesShifted += other.bytesShifted
        readModifyWriteBlocks += other.readModifyWriteBlocks
        bounceWaits += other.bounceWaits
    }
}

/// A file's running totals, shared by the file and the engine slots of its batched requests
/// (which finish after `submit` returned). Used from the engine's thread only, like the file.
final class TransferCounters {
    var totals = TransferStatistics()
}

/// Running totals that many tasks add to at once (an `AsyncFile`'s): one atomic add per count
/// that changes, no lock.
final class SharedTransferCounters: Sendable {
    private let direct = Atomic<Int>(0)
    private let bounced = Atomic<Int>(0)
    private let mergedBlocks = Atomic<Int>(0)
    private let waits = Atomic<Int>(0)

    func add(_ moved: TransferStatistics) {
        if moved.bytesDirect != 0 { direct.wrappingAdd(moved.bytesDirect, ordering: .relaxed) }
        if moved.bytesBounced != 0 { bounced.wrappingAdd(moved.bytesBounced, ordering: .relaxed) }
        if moved.readModifyWriteBlocks != 0 { mergedBlocks.wrappingAdd(moved.readModifyWriteBlocks, ordering: .relaxed) }
        if moved.bounceWaits != 0 { waits.wrappingAdd(moved.bounceWaits, ordering: .relaxed) }
    }

    var totals: TransferStatistics {
        TransferStatistics(bytesDirect: direct.load(ordering: .relaxed), bytesBounced: bounced.load(ordering: .relaxed),
                           readModifyWriteBlocks: mergedBlocks.load(ordering: .relaxed), bounceWaits: waits.load(ordering: .relaxed))
    }
}
