/// The ways DirectIO can move bytes from one descriptor to another, cheapest first.
import SystemPackage
public enum TransferStrategy: String, Sendable, CaseIterable, CustomStringConvertible {
    /// FICLONE/FICLONERANGE: the destination shares the source's extents (xfs, btrfs); no data
    /// moves, so it takes the same time for any size.
    case reflink
    /// copy_file_range: the kernel copies (or, on some filesystems, clones or offloads) the
    /// range without it passing through user memory.
    case copyRange = "copy-range"
    /// splice through a pipe: page references move from source to destination.
    case splice
    /// sendfile: the kernel's file → socket (or file) path.
    case sendfile
    /// io_uring SEND_ZC: O_DIRECT reads into registered, pinned buffers, sent without
    /// copying them into socket buffers; a buffer is reused only after its notification.
    case zeroCopySend = "send-zc"
    /// O_DIRECT reads into pinned pool buffers and O_DIRECT writes from the same buffers,
    /// several in flight: no page cache, no user-space copy.
    case direct
    /// read and write through a user-space buffer: the last resort.
    case buffered

    public var description: String { rawValue }

    /// Whether the path moves bytes through user memory.
    var copiesThroughUserSpace: Bool { self == .buffered }

    /// Why this strategy cannot serve `source` → `destination`, or nil when it can try.
    func unsuitability(from source: TransferEndpoint.Kind, to destination: TransferEndpoint.Kind) -> String? {
        switch self {
        case .reflink, .copyRange:
            if source != .regularFile || destination != .regularFile {
                return "needs regular files on both sides (\(source) → \(destination))"
            }
        case .sendfile:
            if !source.isSeekable { return "reads only from files and block devices, not a \(source)" }
        case .zeroCopySend:
            if !source.isSeekable { return "reads only from files and block devices, not a \(source)" }
            if destination != .socket { return "sends only to sockets, not a \(destination)" }
        case .direct:
            if !source.isSeekable || !destination.isSeekable {
                return "needs files or block devices on both sides (\(source) → \(destination))"
            }
        case .splice:
            if source == .other || destination == .other { return "cannot splice a \(source == .other ? source : destination)" }
        case .buffered:
            break
        }
        return nil
    }

    /// The order `auto` tries strategies in for a pair: cheapest first. For a socket
    /// destination sendfile comes before splice, since it is splice without the caller's pipe
    /// (one system call per chunk instead of two); SEND_ZC is only tried when forced, since it
    /// pays off only for large sends on NICs with scatter-gather, which DirectIO cannot see.
    static func automaticOrder(from source: TransferEndpoint.Kind, to destination: TransferEndpoint.Kind) -> [TransferStrategy] {
        if destination == .socket { return [.sendfile, .splice, .buffered] }
        return [.reflink, .copyRange, .splice, .sendfile, .direct, .buffered]
    }
}
