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
        /// The held blocks, unordered, in a list while they are few: for the few dozen a
        /// process usually has, a scan costs less than hashing the key (about 2,000
        /// instructions a write for test, insert and remove with a `Set`). Past
        /// `Self.listLimit` they move to `heldSet`, and back once fewer than a quarter of that
        /// remain: with thousands of writes holding blocks (many files written at once, or
        /// writers waiting for a bounce buffer), every lock scanned thousands of keys.
        var held: [Key] = []
        var heldSet: Set<Key>?
        static let listLimit = 64
        /// Suspended tasks by arrival number, with the blocks each waits for.
        var waiters: [UInt64: (keys: Keys, resume: UnsafeContinuation<Void, Never>)] = [:]
        /// For each block tasks wait for, their arrival numbers in order: an unlock looks only
        /// at the tasks waiting for the blocks it frees (with thousands of writers waiting,
        /// trying every waiter at every unlock cost seconds).
        var queues: [Key: [UInt64]] = [:]
        var arrivals: UInt64 = 0

        func isHeld(_ key: Key) -> Bool {
            if let heldSet { return heldSet.contains(key) }
            return held.contains(key)
        }

        mutating func tryLock(_ keys: Keys) -> Bool {
            guard keys.allSatisfy({ !isHeld($0) }) else { return false }
            if heldSet != nil {
                keys.forEach { heldSet?.insert($0) }
                return true
            }
            keys.forEach { held.append($0) }
            if held.count > Self.listLimit {
                heldSet = Set(held)
                held.removeAll()
            }
            return true
        }

        mutating func release(_ key: Key) {
            if heldSet != nil {
                heldSet?.remove(key)
                if let set = heldSet, set.count < Self.listLimit / 4 {
                    held = Array(set)
                    heldSet = nil
                }
                return
            }
            guard let index = held.firstIndex(of: key) else { return }
            held.swapAt(index, held.count - 1)
            held.removeLast()
        }

        mutating func wait(for keys: Keys, _ resume: UnsafeContinuation<Void, Never>) {
            arrivals += 1
            waiters[arrivals] = (keys, resume)
            keys.forEach { queues[$0, default: []].append(arrivals) }
        }

        /// Locks the blocks of the first task waiting for the freed `key` whose blocks are all
        /// free, and says how to resume it: once one task has `key`, no other waiting for it
        /// can go. (A task waits for no block but those it is queued under, so the tasks an
        /// unlock can free are all in the queues of the blocks it released.)
        mutating func grantFirst(waitingFor key: Key) -> UnsafeContinuation<Void, Never>? {
            // No hashing while nobody waits: the usual unlock.
            guard !waiters.isEmpty, let queue = queues[key] else { return nil }
            for arrival in queue {
                guard let waiter = waiters[arrival], tryLock(waiter.keys) else { continue }
                waiters[arrival] = nil
                waiter.keys.forEach { block in
                    queues[block]?.removeAll { $0 == arrival }
                    if queues[block]?.isEmpty == true { queues[block] = nil }
                }
                return waiter.resume
            }
            return nil
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
                state.wait(for: keys, resume)
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
            keys.forEach { key in
                if let resume = state.grantFirst(waitingFor: key) { granted.append(resume) }
            }
        }
        for resume in granted { resume.resume() }
    }
}
