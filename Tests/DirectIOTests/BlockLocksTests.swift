import Foundation
import Testing
@testable import DirectIO

/// The block locks' exclusion, with few and with thousands of holders (their list becomes a
/// set past 64 blocks, and a list again below 16), from tasks and a thread at once.
@Suite struct BlockLocksTests {
    /// Which blocks their holders say they hold, and how often one was already held.
    final class Holders: Sendable {
        let locks = BlockLocks()
        let inode = UInt64.random(in: 1...UInt64.max)
        private let state = ConditionLock((held: Set<Int64>(), clashes: 0))

        /// Writer n's blocks: n and n + 1, one shared with each neighbour.
        func keys(_ writer: Int) -> BlockLocks.Keys {
            var keys = BlockLocks.Keys()
            keys.append(BlockLocks.Key(device: 1, inode: inode, block: Int64(writer) * 4096))
            keys.append(BlockLocks.Key(device: 1, inode: inode, block: Int64(writer + 1) * 4096))
            return keys
        }

        func hold(_ writer: Int) {
            state.withLock { state in
                for block in [Int64(writer) * 4096, Int64(writer + 1) * 4096] where !state.held.insert(block).inserted { state.clashes += 1 }
            }
        }

        func drop(_ writer: Int) {
            state.withLock { state in
                state.held.remove(Int64(writer) * 4096)
                state.held.remove(Int64(writer + 1) * 4096)
            }
        }

        var clashes: Int { state.withLock { $0.clashes } }
    }

    /// Tasks lock overlapping pairs of blocks and hold them across a suspension, so thousands
    /// hold or wait at once; a thread takes turns among them. No block is held twice, and all
    /// are free at the end.
    @Test(.timeLimit(.minutes(1)), arguments: [8, 3_000])
    func noBlockIsEverHeldTwice(writers: Int) async throws {
        let holders = Holders()
        await withTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    let mine = holders.keys(writer)
                    await holders.locks.lock(mine)
                    holders.hold(writer)
                    await Task.yield()
                    holders.drop(writer)
                    holders.locks.unlock(mine)
                }
            }
            group.addTask {
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    Thread.detachNewThread {
                        for writer in stride(from: 0, to: writers, by: max(1, writers / 50)) {
                            let mine = holders.keys(writer)
                            holders.locks.lock(mine)
                            holders.hold(writer)
                            holders.drop(writer)
                            holders.locks.unlock(mine)
                        }
                        done.resume()
                    }
                }
            }
        }
        #expect(holders.clashes == 0)
        for writer in 0..<writers {
            #expect(holders.locks.tryLock(holders.keys(writer)), "writer \(writer)")
            holders.locks.unlock(holders.keys(writer))
        }
    }
}
