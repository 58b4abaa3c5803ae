import Glibc
import SystemPackage

/// sendfile: the kernel's own file → socket path (it splices through a pipe of its own).
/// The destination is written at its file position: for a file destination this path first
/// moves that position to the range's offset.
final class SendfilePath: TransferPath {
    let strategy = TransferStrategy.sendfile
    static let chunkBytes = 16 << 20
    private let source: TransferEndpoint
    private let destination: TransferEndpoint

    init(source: TransferEndpoint, destination: TransferEndpoint) {
        self.source = source
        self.destination = destination
    }

    func move(_ range: TransferRange, meter: inout TransferMeter) throws(PathFailure) -> Int64 {
        if destination.kind.isSeekable {
            do { _ = try Sys.lseek(destination.descriptor, range.destinationOffset, SEEK_SET) } catch {
                throw PathFailure.from(error, call: "lseek", moved: 0, strategy: strategy, destination: destination.label, offset: range.destinationOffset)
            }
        }
        var sourceOffset = range.sourceOffset
        var moved: Int64 = 0
        while range.count.map({ moved < $0 }) ?? true {
            let wanted = range.chunk(after: moved, limit: Self.chunkBytes)
            let sent: Int
            do { sent = try Sys.sendfile(to: destination.descriptor, from: source.descriptor, at: &sourceOffset, count: wanted) } catch {
                throw PathFailure.from(error, call: "sendfile", moved: moved, strategy: strategy, destination: destination.label,
                                       offset: range.destinationOffset + moved, detail: "sending from \(source.label) at offset \(range.sourceOffset + moved)")
            }
            if sent == 0 { break }
            moved += Int64(sent)
            try meter.moved(Int64(sent), reaching: range.destinationOffset + moved)
        }
        return moved
    }
}
