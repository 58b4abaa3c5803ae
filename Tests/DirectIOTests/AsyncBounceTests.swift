import Foundation
import Glibc
import Testing
@testable import DirectIO
import DirectIOTesting

/// AsyncFile takes any memory, offset and length, like DirectFile, through the same
/// realignment layer: byte-exact against a model and pread (RELIABILITY-CASES 1, 2, 7).
@Suite struct AsyncBounceTests {
    @Test(arguments: AsyncTests.engines)
    func unalignedReadsAndWritesOnExt4MatchTheReference(engine: IOEngine.Choice) async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let runtime = try IORuntime(rings: 2, queueDepth: 32, engine: engine)
        try await BounceWorkload.run(path: directory + "/data", runtime: runtime, operations: 300, span: 300_000, seed: 141)
        #expect(runtime.bouncePool.available == runtime.bouncePool.count && runtime.smallBouncePool.available == runtime.smallBouncePool.count)
    }

    /// Short transfers (cut to 512-byte multiples), EAGAIN, EINTR and completions out of
    /// order under every step of the realignment: the engine resubmits and retries, and the
    /// bytes still match the model.
    @Test(arguments: AsyncTests.engines)
    func unalignedRequestsStayByteExactUnderInjectedFaults(engine: IOEngine.Choice) async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let plan = FaultPlan(seed: 191, shortTransferPercent: 30, shortGranularity: 512, againPercent: 10, interruptPercent: 10, delayPercent: 30)
        let runtime = try IORuntime.injectingFaults(plan, rings: 2, queueDepth: 16, engine: engine)
        try await BounceWorkload.run(path: directory + "/data", runtime: runtime, operations: 200, span: 300_000, seed: 192)
        // The faults reached the requests: the rings retried and resubmitted.
        let counted = await runtime.ringStatistics()
        #expect(counted.reduce(0) { $0 + $1.retries } > 0 && counted.reduce(0) { $0 + $1.resubmissions } > 0, "\(counted)")
    }

    @Test func tmpfsTakesEveryRequestDirectly() async throws {
        let directory = "/dev/shm/directio-async-bounce-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { TestSupport.remove(directory) }
        for (index, engine) in AsyncTests.engines.enumerated() {
            let runtime = try IORuntime(rings: 1, queueDepth: 16, engine: engine)
            try await BounceWorkload.run(path: directory + "/random\(index)", runtime: runtime, operations: 200, span: 300_000, seed: 143 + UInt64(index))
        }
    }

    /// Tasks write disjoint 1,000-byte ranges whose edges share blocks, all at once: the
    /// block locks (awaited, never blocking a ring thread) keep each read-modify-write from
    /// erasing a neighbour's bytes. One ring, so a task that blocked its thread would hang.
    @Test(.timeLimit(.minutes(1)), arguments: AsyncTests.engines)
    func tasksWritingAdjacentUnalignedRangesLoseNothing(engine: IOEngine.Choice) async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, [UInt8](repeating: 0, count: 256 * 1000 + 4096))
        let runtime = try IORuntime(rings: 1, queueDepth: 2, engine: engine)
        let file = try AsyncFile(path: path, runtime: runtime)
        let failures = await withTaskGroup(of: String?.self) { group in
            for range in 0..<256 {
                group.addTask { @Sendable in
                    await withTaskExecutorPreference(range % 2 == 0 ? runtime.executor(ring: 0) : nil) {
                        let bytes = [UInt8](repeating: UInt8(1 + range % 255), count: 1000)
                        do {
                            let written = try await file.write(bytes, at: Int64(range * 1000))
                            return written == 1000 ? nil : "range \(range): wrote \(written)"
                        } catch { return "range \(range): \(error)" }
                    }
                }
            }
            var failures: [String] = []
            for await failure in group { if let failure { failures.append(failure) } }
            return failures
        }
        #expect(failures.isEmpty, "\(failures.prefix(3))")
        var expected = [UInt8]()
        for range in 0..<256 { expected += [UInt8](repeating: UInt8(1 + range % 255), count: 1000) }
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: 256_000), expected, "every range as its task wrote it")
        // Two small bounce buffers (one per request the ring holds) for 256 tasks: most
        // waited, and every buffer came back.
        #expect(runtime.smallBouncePool.count == 2 && runtime.smallBouncePool.waits > 0)
        #expect(runtime.smallBouncePool.available == 2)
    }

    @Test func headAndTailFarApartAreReadTogetherAndMerged() async throws {
        // A write of 200,000 bytes at an unaligned offset: its head and tail blocks are more
        // than 64 KiB apart, so the two merge reads go to the ring as a pair.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        var model = TestSupport.pattern(count: 400_000, seed: 151)
        try TestSupport.referenceWrite(path, model)
        let runtime = try IORuntime(rings: 1, queueDepth: 8)
        let file = try AsyncFile(path: path, runtime: runtime)
        let bytes = TestSupport.pattern(count: 200_000, seed: 152)
        let written = try await file.write(bytes, at: 12_345)
        #expect(written == 200_000)
        model.replaceSubrange(12_345..<212_345, with: bytes)
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: 400_001), model, "file after the write")
        let back = try await file.read(count: 300_000, at: 5)
        TestSupport.expectSameBytes(back, Array(model[5..<300_005]), "read back at an odd offset")
    }

    /// A plain task's read-modify-write runs its requests from the ring's thread (one crossing
    /// there and one back for the whole transfer, counted at the ring's inbox), and the task is
    /// back on Swift's pool when the call returns: the caller's code never runs on a ring it
    /// did not ask for.
    @Test(arguments: AsyncTests.engines)
    func plainTasksAreBackOnSwiftsPoolAfterARealignedTransfer(engine: IOEngine.Choice) async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        var model = TestSupport.pattern(count: 300_000, seed: 171)
        try TestSupport.referenceWrite(path, model)
        let runtime = try IORuntime(rings: 1, queueDepth: 8, engine: engine)
        let file = try AsyncFile(path: path, runtime: runtime)
        // With the rings as Swift's global executor every task runs on a ring: nothing to check.
        let onPool = IORuntime.globalExecutorRuntime == nil
        #expect(!onPool || RingExecutor.current == nil)
        func crossings() -> Int { runtime.workers.reduce(0) { $0 + $1.crossings } }
        for (index, (offset, count)) in [(12_345, 4_000), (100_001, 9_000), (150_000, 120_000)].enumerated() {
            let bytes = TestSupport.pattern(count: count, seed: 172 + UInt64(index))
            var before = crossings()
            #expect(try await file.write(bytes, at: Int64(offset)) == count)
            // Edge reads, then the write: the task crossed to the ring once, not per request.
            #expect(!onPool || crossings() - before == 1, "crossings to the ring for the write at \(offset): \(crossings() - before)")
            #expect(!onPool || RingExecutor.current == nil, "after the write at \(offset)")
            model.replaceSubrange(offset..<(offset + count), with: bytes)
            before = crossings()
            let back = try await file.read(count: count + 10, at: Int64(offset - 5))
            #expect(!onPool || crossings() - before == 1, "crossings to the ring for the read at \(offset - 5): \(crossings() - before)")
            #expect(!onPool || RingExecutor.current == nil, "after the read at \(offset - 5)")
            TestSupport.expectSameBytes(back, Array(model[(offset - 5)..<(offset + count + 5)]), "read back around \(offset)")
        }
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: 300_001), model, "file after the writes (pread)")
    }

    /// Plain tasks write unaligned 1,000-byte ranges whose edge blocks they share with their
    /// neighbours, and half are cancelled at random moments, while their read-modify-writes run
    /// from the ring. Each range ends all old (the task saw `CancellationError`) or all new (it
    /// saw its count); every bounce buffer comes back and no block stays locked.
    @Test(.timeLimit(.minutes(1)), arguments: AsyncTests.engines)
    func cancellingPlainTasksMidReadModifyWriteLosesNothing(engine: IOEngine.Choice) async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let ranges = 2_000
        let old = TestSupport.pattern(count: ranges * 1000 + 8192, seed: 181)
        try TestSupport.referenceWrite(path, old)
        let runtime = try IORuntime(rings: 2, queueDepth: 16, engine: engine)
        let file = try AsyncFile(path: path, runtime: runtime)
        let new = TestSupport.pattern(count: ranges * 1000, seed: 182)
        enum Outcome: Sendable { case wrote, cancelled, wrong(String) }
        var tasks: [Task<Outcome, Never>] = []
        for range in 0..<ranges {
            tasks.append(Task {
                let bytes = Array(new[(range * 1000)..<((range + 1) * 1000)])
                do {
                    let written = try await file.write(bytes, at: Int64(7 + range * 1000))
                    return written == 1000 ? .wrote : .wrong("range \(range): wrote \(written)")
                } catch is CancellationError {
                    return .cancelled
                } catch {
                    return .wrong("range \(range): \(error)")
                }
            })
        }
        var random = SystemRandomNumberGenerator()
        for range in Array(0..<ranges).shuffled(using: &random).prefix(ranges / 2) {
            tasks[range].cancel()
            if Int.random(in: 0..<20, using: &random) == 0 { try await Task.sleep(nanoseconds: 50_000) }
        }
        var outcomes: [Outcome] = []
        for task in tasks { outcomes.append(await task.value) }
        let after = try TestSupport.referenceRead(path, count: old.count + 1)
        #expect(after.count == old.count)
        var counts = (wrote: 0, cancelled: 0)
        for (range, outcome) in outcomes.enumerated() {
            let span = (7 + range * 1000)..<(7 + (range + 1) * 1000)
            let onDisk = Array(after[span])
            switch outcome {
            case .wrote:
                counts.wrote += 1
                TestSupport.expectSameBytes(onDisk, Array(new[(range * 1000)..<((range + 1) * 1000)]), "range \(range), written")
            case .cancelled:
                counts.cancelled += 1
                TestSupport.expectSameBytes(onDisk, Array(old[span]), "range \(range), cancelled")
            case .wrong(let why):
                Issue.record("\(why)")
            }
        }
        #expect(counts.wrote + counts.cancelled == ranges && counts.wrote >= ranges / 2)
        TestSupport.expectSameBytes(Array(after[0..<7]), Array(old[0..<7]), "bytes before the first range")
        TestSupport.expectSameBytes(Array(after[(7 + ranges * 1000)...]), Array(old[(7 + ranges * 1000)...]), "bytes after the last range")
        #expect(runtime.smallBouncePool.available == runtime.smallBouncePool.count && runtime.bouncePool.available == runtime.bouncePool.count)
        // No block stays locked: a write over every range's edges still goes through.
        #expect(try await file.write(Array(new[0..<(ranges * 1000)]), at: 7) == ranges * 1000)
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: ranges * 1000, at: 7), Array(new[0..<(ranges * 1000)]), "the whole span rewritten")
    }

    @Test func misalignedRequestsAreRefusedWhenTheFileSaysFail() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let before = TestSupport.pattern(count: 8192, seed: 161)
        try TestSupport.referenceWrite(path, before)
        let runtime = try IORuntime(rings: 1, queueDepth: 8)
        let file = try AsyncFile(path: path, options: OpenOptions(misaligned: .fail), runtime: runtime)
        let bytes = [UInt8](repeating: 7, count: 100)
        await #expect(throws: DirectIOError.self) {
            _ = try await file.write(bytes, at: 10)
        }
        do {
            _ = try await file.write(bytes, at: 10)
        } catch let error as DirectIOError {
            #expect(error.code == .misaligned && error.offset == 10 && error.path == path)
        }
        #expect(try TestSupport.referenceRead(path, count: 8193) == before)
    }
}
