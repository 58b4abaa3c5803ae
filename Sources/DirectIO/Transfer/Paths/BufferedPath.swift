import Glibc
import SystemPackage

/// read and write through one user-space buffer: works for every pair, and is the only path
/// whose bytes pass through user memory (counted in `TransferReport.userSpaceCopies`).
final class BufferedPath: TransferPath {
    let strategy = TransferStrategy.buffered
    private let source: TransferEndpoint
    private let destination: TransferEndpoint
    private let buffer: UnsafeMutableRawBufferPointer

    init(source: TransferEndpoint, destination: TransferEndpoint, bufferBytes: Int) {
        self.source = source
        self.destination = destination
        buffer = .allocate(byteCount: max(4096, bufferBytes), alignment: 4096)
    }

    deinit { buffer.deallocate() }

    func move(_ range: TransferRange, meter: inout TransferMeter) throws(PathFailure) -> Int64 {
        var moved: Int64 = 0
        while range.count.map({ moved < $0 }) ?? true {
            let wanted = range.chunk(after: moved, limit: buffer.count)
            let sourceOffset = range.sourceOffset + moved
            let got: Int
            do {
                got = source.kind.isSeekable
                    ? try Sys.pread(source.descriptor, buffer.baseAddress, wanted, sourceOffset)
                    : try Sys.read(source.descriptor, buffer.baseAddress, wanted)
            } catch {
                throw .failed(.system(error, operation: "transfer (buffered)", call: source.kind.isSeekable ? "pread" : "read", path: source.label, offset: sourceOffset))
            }
            if got == 0 { break }
            var written = 0
            while written < got {
                let destinationOffset = range.destinationOffset + moved + Int64(written)
                do throws(Errno) {
                    let base = buffer.baseAddress.map { UnsafeRawPointer($0 + written) }
                    let count = destination.kind.isSeekable
                        ? try Sys.pwrite(destination.descriptor, base, got - written, destinationOffset)
                        : try Sys.write(destination.descriptor, base, got - written)
                    if count == 0 { throw Errno.noSpace }  // a regular file takes no bytes only when full
                    written += count
                } catch {
                    throw .failed(.system(error, operation: "transfer (buffered)", call: destination.kind.isSeekable ? "pwrite" : "write", path: destination.label, offset: destinationOffset))
                }
            }
            moved += Int64(got)
            try meter.moved(Int64(got), reaching: range.destinationOffset + moved)
        }
        return moved
    }
}
