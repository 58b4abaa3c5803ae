import Synchronization

/// Closes an async file's descriptor once every ring has dropped it from its fixed-file table.
/// Closing first would let the number be reused by a new file while a ring still maps it to
/// the old one; a ring whose worker has exited has no table and counts itself out at once.
final class DescriptorRelease: Sendable {
    let fd: Int32
    private let remaining: Atomic<Int>

    init(fd: Int32, rings: Int) {
        self.fd = fd
        remaining = Atomic(rings)
    }

    /// One ring is done with the descriptor; the last one closes it.
    func done() {
        if remaining.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            _ = try? Sys.close(fd)
        }
    }
}
