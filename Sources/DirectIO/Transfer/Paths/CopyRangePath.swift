import Glibc
import SystemPackage

/// copy_file_range: the kernel copies inside itself, and some filesystems clone (xfs, btrfs)
/// or offload (NFS server-side copy) instead. One call moves at most about 2 GiB
/// (MAX_RW_COUNT), so it loops; chunks are smaller still so progress and cancellation are
/// prompt.
final class CopyRangePath: TransferPath {
    let strategy = TransferStrategy.copyRange
    static let chunkBytes = 128 << 20
    private let source: TransferEndpoint
    private let destination: TransferEndpoint

    init(source: TransferEndpoint, destination: TransferEndpoint) {
        self.source = source
        self.destination = destination
    }

    func move(_ range: TransferRange, meter: inout TransferMeter) throws(PathFailure) -> Int64 {
        var sourceOffset = range.sourceOffset
        var destinationOffset = range.destinationOffset
        var moved: Int64 = 0
        while range.count.map({ moved < $0 }) ?? true {
            let wanted = range.chunk(after: moved, limit: Self.chunkBytes)
            let copied: Int
            do {
                copied = try Sys.copyFileRange(from: source.descriptor, at: &sourceOffset, to: destination.descriptor, at: &destinationOffset, count: wanted)
            } catch {
                // Unsupported-class errnos come from the first call (EXDEV across filesystems
                // on older kernels, EINVAL for special files); mid-copy they still mean "use
                // another path for the rest".
                throw PathFailure.from(error, call: "copy_file_range", moved: moved, strategy: strategy, destination: destination.label,
                                       offset: range.destinationOffset + moved, detail: "copying from \(source.label) at offset \(range.sourceOffset + moved)")
            }
            if copied == 0 { break }  // the source ended
            moved += Int64(copied)
            try meter.moved(Int64(copied), reaching: destinationOffset)
        }
        return moved
    }
}
