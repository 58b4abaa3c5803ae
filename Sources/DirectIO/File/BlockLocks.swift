/// Locks on file blocks under read-modify-write, shared by every file in the process, whatever
/// API wrote through it.
///
/// Two unaligned writes that touch the same edge block would otherwise each read the old
/// block, merge their own bytes, and write it back, and the later write would erase the
/// earlier one's bytes. A write locks all its partial blocks at once or waits holding none,
/// so writers never deadlock; writes to other blocks never wait. Threads wait on the lock's
/// condition; tasks suspend (a ring thread must never block) and are granted their blocks by
/// the unlock that frees them.
final class BlockLocks: Sendable {
    struct Key: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
        var block: Int64
    }

    /// The blocks one write locks: its partly covered head and tail, held inline (a plan
    /// marks at most these two).
    struct Keys: Sendable {
        private(set) var head: Key?
        private(set) var tail: Key?

        var isEmpty: Bool { head == nil }

        mutating func append(_ key: Key) {
            assert(tail == nil, "a write locks at most its head and tail blocks")
            if head == nil { head = key } else { tail = key }
        }

        func allSatisfy(_ predicate: (Key) -> Bool) -> Bool {
            (head.map(predicate) ?? true) && (tail.map(predicate) ?? true)
        }

        func forEach(_ body: (Key) -> Void) {
            if let head { body(head) }
            if let tail { body(tail) }
        }
    }

    private struct State: Sendable {
        /// The held blocks, unordered. A list, not a set: it holds two blocks per unaligned
        /// write in flight, and for the few dozen a process usually has, a scan costs less
        /// than hashing the key did (about 2,000 instructions a write for test, insert and
        /// remove with a `Set`). Thousands of unaligned writes in flight at once would want
        /// the set back.
        var held: [Key] = []
        /// Suspended tasks, in arrival order, with the blocks each waits for.
        var waiting: [(keys: Keys, resume: UnsafeContinuation<Void, Never>)] = []

        mutating func tryLock(_ keys: Keys) -> Bool {
            guard keys.allSatisfy({ !held.contains($0) }) else { return false }
            keys.forEach { held.append($0) }
            return true
        }

        mutating func release(_ key: Key) {
            guard let index = held.firstIndex(of: key) else { return }
            held.swapAt(index, held.count - 1)
            held.removeLast()
        }
    }

    static let shared = BlockLocks()
    private let state = ConditionLock(State())

    /// Locks `keys` if none is held; never waits.
    func tryLock(_ keys: Keys) -> Bool {
        keys.isEmpty || state.withLock { $0.tryLock(keys) }
    }

    func lock(_ keys: Keys) {
        guard !keys.isEmpty else { return }
        _ = state.wait { state -> Bool? in state.tryLock(keys) ? true : nil }
    }

    /// Locks `keys` from a task: suspends while another write holds any of them.
    func lock(_ keys: Keys) async {
        guard !keys.isEmpty, !state.withLock({ $0.tryLock(keys) }) else { return }
        await suspend { (resume: UnsafeContinuation<Void, Never>) in
            // Checked again under the lock: an unlock may have come in between.
            let granted = state.withLock { state -> Bool in
                if state.tryLock(keys) { return true }
                state.waiting.append((keys, resume))
                return false
            }
            if granted { resume.resume() }
        }
    }

    func unlock(_ keys: Keys) {
        guard !keys.isEmpty else { return }
        var granted: [UnsafeContinuation<Void, Never>] = []
        state.updateAndBroadcast { state in
            keys.forEach { state.release($0) }
            // Waiting tasks whose blocks are all free now get them before any thread looks.
            var index = 0
            while index < state.waiting.count {
                if state.tryLock(state.waiting[index].keys) {
                    granted.append(state.waiting.remove(at: index).resume)
                } else {
                    index += 1
                }
            }
        }
        for resume in granted { resume.resume() }
    }
}
