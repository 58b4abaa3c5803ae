import CDirectIO
import SystemPackage
import Glibc

/// FICLONE / FICLONERANGE: the destination range comes to share the source's extents. No data
/// moves, holes stay holes, and the call takes the same time for any size. Filesystems that
/// cannot share extents (ext4, tmpfs), or ranges across filesystems, refuse it at once.
final class ReflinkPath: TransferPath {
    let strategy = TransferStrategy.reflink
    private let source: TransferEndpoint
    private let destination: TransferEndpoint
    private let sourceSize: Int64

    init(source: TransferEndpoint, destination: TransferEndpoint, sourceSize: Int64) {
        self.source = source
        self.destination = destination
        self.sourceSize = sourceSize
    }

    func move(_ range: TransferRange, meter: inout TransferMeter) throws(PathFailure) -> Int64 {
        let count = min(range.count ?? (sourceSize - range.sourceOffset), sourceSize - range.sourceOffset)
        guard count > 0 else { return 0 }
        guard source.device == destination.device else {
            throw .unsupported("source and destination are on different filesystems", moved: 0)
        }
        let wholeFile = range.sourceOffset == 0 && range.destinationOffset == 0 && count == sourceSize
        let call = wholeFile ? "FICLONE" : "FICLONERANGE"
        do {
            if wholeFile {
                try Sys.ioctl(destination.descriptor, DIO_FICLONE, value: UInt(source.descriptor))
            } else {
                // src_length reaching the source's end may end off a block boundary; anything
                // else must be block-aligned, or the kernel says EINVAL (and we fall back).
                var clone = dio_file_clone_range(
                    src_fd: Int64(source.descriptor), src_offset: UInt64(range.sourceOffset),
                    src_length: range.sourceOffset + count == sourceSize ? 0 : UInt64(count),
                    dest_offset: UInt64(range.destinationOffset))
                try Sys.ioctl(destination.descriptor, DIO_FICLONERANGE, &clone)
            }
        } catch {
            let filesystem = (try? Sys.filesystemMagic(destination.descriptor)).map(FilesystemName.fromMagic) ?? "this"
            throw PathFailure.from(error, call: call, moved: 0, strategy: strategy, destination: destination.label, offset: range.destinationOffset,
                                   detail: PathFailure.isUnsupported(error) ? "the \(filesystem) filesystem cannot share extents for this range" : nil)
        }
        try meter.moved(count, reaching: range.destinationOffset + count)
        return count
    }
}
