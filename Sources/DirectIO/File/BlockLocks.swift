/// Locks on file blocks under read-modify-write, shared by every DirectFile in the process.
///
/// Two unaligned writes that touch the same edge block would otherwise each read the old
/// block, merge their own bytes, and write it back, and the later write would erase the
/// earlier one's bytes. A write locks all its partial blocks at once or waits holding none,
/// so writers never deadlock; writes to other blocks never wait.
final class BlockLocks: Sendable {
    struct Key: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
        var block: Int64
    }

    static let shared = BlockLocks()
    private let held = ConditionLock<Set<Key>>([])

    func lock(_ keys: [Key]) {
        guard !keys.isEmpty else { return }
        _ = held.wait { held -> Bool? in
            guard keys.allSatisfy({ !held.contains($0) }) else { return nil }
            held.formUnion(keys)
            return true
        }
    }

    func unlock(_ keys: [Key]) {
        guard !keys.isEmpty else { return }
        held.updateAndBroadcast { $0.subtract(keys) }
    }
}
