import CDirectIO
import SystemPackage
import Glibc

/// One end of a transfer: an open descriptor the caller keeps owning, and what it is.
///
/// The kind decides which kernel paths can serve a pair (`TransferStrategy`): only regular
/// files can be cloned or copied with copy_file_range, only files and block devices can be
/// read by sendfile or with O_DIRECT, and every kind can splice through a pipe.
public struct TransferEndpoint: Sendable {
    package enum Kind: String, Sendable, CustomStringConvertible {
        case regularFile = "regular file"
        case blockDevice = "block device"
        case socket
        case pipe
        /// Character devices and the rest: only buffered reads and writes.
        case other

        package var description: String { rawValue }

        /// Whether the endpoint is addressed by offset (and has a size).
        var isSeekable: Bool { self == .regularFile || self == .blockDevice }
    }

    public let descriptor: Int32
    /// What errors and reports call it: the path, or a description of the descriptor.
    public let label: String
    package let kind: Kind
    /// The filesystem (st_dev) of a regular file: reflinks work only within one.
    let device: UInt64

    /// Describes `descriptor` (fstat). The descriptor stays the caller's: it must stay open
    /// for the transfer's duration and is never closed here.
    public init(descriptor: Int32, label: String? = nil) throws(DirectIOError) {
        let info: stat
        do { info = try Sys.fstat(descriptor) } catch {
            throw .system(error, operation: "transfer", call: "fstat", path: label ?? "descriptor \(descriptor)")
        }
        self.descriptor = descriptor
        self.label = label ?? "descriptor \(descriptor)"
        self.device = UInt64(info.st_dev)
        switch info.st_mode & S_IFMT {
        case S_IFREG: kind = .regularFile
        case S_IFBLK: kind = .blockDevice
        case S_IFSOCK: kind = .socket
        case S_IFIFO: kind = .pipe
        default: kind = .other
        }
    }

    /// Bytes in a regular file or on a block device; nil for streams.
    func size() throws(DirectIOError) -> Int64? {
        switch kind {
        case .regularFile:
            do { return Int64(try Sys.fstat(descriptor).st_size) } catch {
                throw .system(error, operation: "transfer", call: "fstat", path: label)
            }
        case .blockDevice:
            var bytes: UInt64 = 0
            do { try Sys.ioctl(descriptor, DIO_BLKGETSIZE64, &bytes) } catch {
                throw .system(error, operation: "transfer", call: "ioctl(BLKGETSIZE64)", path: label)
            }
            return Int64(bytes)
        default:
            return nil
        }
    }

    /// A path that reopens the same open file (for O_DIRECT descriptors of the caller's
    /// files): /proc/self/fd/N works for unlinked and O_TMPFILE files too.
    var reopenPath: String { "/proc/self/fd/\(descriptor)" }
}
