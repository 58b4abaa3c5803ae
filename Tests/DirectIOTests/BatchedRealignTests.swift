import Glibc
import Testing
@testable import DirectIO
import DirectIOTesting
import DIOCommands

/// Batched requests at any offset and length: unaligned writes (edge reads, merge, write, as
/// steps of one request under one tag) and reads whose block range does not fit their buffer,
/// many in flight at once, byte-exact against a model and pread.
@Suite struct BatchedRealignTests {
    /// Rounds of `perRound` batched requests: a write round writes disjoint unaligned ranges
    /// that share edge blocks with their neighbours (so requests of one engine wait for each
    /// other's block locks); a read round reads random unaligned ranges. Then the whole file
    /// against the model.
    /// With `cancellations`, requests may end ECANCELED at any step (the fault engine's): their
    /// writes must then have changed nothing.
    static func run(path: String, engine: IOEngine, rounds: Int, perRound: Int, seed: UInt64, fileBytes: Int = 1 << 20, cancellations: Bool = false) throws -> Int {
        var cancelled = 0
        var model = TestSupport.pattern(count: fileBytes, seed: seed)
        try TestSupport.referenceWrite(path, model)
        let pool = try BufferPool(count: perRound, bufferBytes: 20_480)
        engine.register(pool)
        let file = try DirectFile(path: path, engine: engine)
        var random = SplitMix(seed: seed ^ 0x5555)
        for round in 0..<rounds {
            let isWrite = round % 2 == 0
            var requests: [UInt64: (offset: Int, count: Int, bufferOffset: Int, bytes: [UInt8])] = [:]
            // Write rounds: consecutive ranges from a random start, each 1...17,000 bytes long.
            var next = Int(random.next() % UInt64(fileBytes / 2))
            for slot in 0..<perRound {
                guard var buffer = pool.take() else { Issue.record("pool empty"); return cancelled }
                let bufferOffset = Int(random.next() % 2) == 0 ? 0 : Int(random.next() % 3000)
                let count = 1 + Int(random.next() % UInt64(min(17_000, buffer.count - bufferOffset)))
                if isWrite {
                    let offset = next
                    next += count
                    let bytes = TestSupport.pattern(count: count, seed: seed &+ UInt64(round * perRound + slot))
                    buffer.withUnsafeMutableBytes { raw in
                        UnsafeMutableRawBufferPointer(rebasing: raw[bufferOffset..<bufferOffset + count]).copyBytes(from: bytes)
                    }
                    requests[UInt64(slot)] = (offset, count, bufferOffset, bytes)
                    try file.submitWrite(buffer, bufferOffset: bufferOffset, count: count, at: Int64(offset), tag: UInt64(slot))
                } else {
                    let offset = Int(random.next() % UInt64(fileBytes + 4096))
                    requests[UInt64(slot)] = (offset, count, bufferOffset, [])
                    try file.submitRead(into: buffer, bufferOffset: bufferOffset, count: count, at: Int64(offset), tag: UInt64(slot))
                }
            }
            var reaped = 0
            while reaped < perRound {
                try engine.reap(minimum: 1) { completion in
                    var completion = completion
                    reaped += 1
                    guard let request = requests[completion.tag], let buffer = completion.takeBuffer() else { Issue.record("no request or buffer"); return }
                    #expect(completion.offset == Int64(request.offset))
                    if cancellations && completion.errno == .canceled {
                        cancelled += 1
                        return
                    }
                    #expect(completion.errno == nil, "round \(round), tag \(completion.tag): \(String(describing: completion.errno))")
                    let bytes = Array(UnsafeRawBufferPointer(start: buffer.baseAddress + request.bufferOffset, count: request.count))
                    if isWrite {
                        #expect(completion.bytes == request.count)
                        model.replaceSubrange(request.offset..<request.offset + request.count, with: request.bytes)
                    } else {
                        let available = max(0, min(request.count, model.count - request.offset))
                        #expect(completion.bytes == available, "round \(round): read \(completion.bytes) of \(available) at \(request.offset)")
                        if available > 0 {
                            TestSupport.expectSameBytes(Array(bytes.prefix(available)), Array(model[request.offset..<request.offset + available]), "round \(round), read at \(request.offset)")
                        }
                    }
                }
            }
        }
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: fileBytes + 1), model, "the file against the model")
        #expect(pool.available == perRound)
        #expect(engine.statistics.transfers.readModifyWriteBlocks > 0 || file.limits.offsetAlignment == 1)
        return cancelled
    }

    @Test(arguments: EngineTests.engines)
    func unalignedBatchedWritesAndReadsMatchTheModel(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        _ = try Self.run(path: directory + "/data", engine: config.make(queueDepth: 32), rounds: 20, perRound: 24, seed: 201)
    }

    @Test(arguments: FaultInjectionTests.engines)
    func unalignedBatchedRequestsStayByteExactUnderInjectedFaults(choice: IOEngine.Choice) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let plan = FaultPlan(seed: 202, shortTransferPercent: 30, shortGranularity: 512, againPercent: 10, interruptPercent: 10, delayPercent: 30)
        let engine = try TestSupport.skippingIfMemlockRefuses { try IOEngine.injectingFaults(plan, choice, queueDepth: 32) }
        _ = try Self.run(path: directory + "/data", engine: engine, rounds: 16, perRound: 24, seed: 203)
        #expect(engine.statistics.retries > 0 && engine.statistics.resubmissions > 0)
    }

    /// ECANCELED at any step (merge read, write, read): the request ends there, a write that
    /// did not reach its write step changed nothing, and no lock or buffer is kept.
    @Test(arguments: FaultInjectionTests.engines)
    func requestsCancelledAtAnyStepChangeNothingAndKeepNothing(choice: IOEngine.Choice) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let plan = FaultPlan(seed: 205, cancelPercent: 15)
        let engine = try TestSupport.skippingIfMemlockRefuses { try IOEngine.injectingFaults(plan, choice, queueDepth: 32) }
        let cancelled = try Self.run(path: directory + "/data", engine: engine, rounds: 16, perRound: 24, seed: 206, cancellations: true)
        #expect(cancelled > 0)
        #expect(engine.smallBouncePool.map { $0.available == $0.count } ?? true)
        #expect(engine.bouncePool.available == engine.bouncePool.count)
    }

    /// A synchronous write that needs a block its own engine's batched write holds, and a
    /// batched write that needs a bounce buffer its own engine's requests all hold: both make
    /// those requests progress (only this thread reaps them) instead of waiting for themselves.
    // A call waiting for itself would hang: the time limit turns that into a failure.
    @Test(.timeLimit(.minutes(1)), arguments: EngineTests.engines)
    func callsNeverWaitForTheirOwnEnginesBatchedRequests(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        var model = TestSupport.pattern(count: 1 << 20, seed: 207)
        try TestSupport.referenceWrite(path, model)
        let engine = try config.make(queueDepth: 8)
        let pool = try BufferPool(count: 8, bufferBytes: 8192)
        // Two bounce buffers of the file's own for eight batched writes.
        let bounce = try BufferPool(count: 2, bufferBytes: 65536)
        let file = try DirectFile(path: path, options: OpenOptions(bouncePool: bounce), engine: engine)
        guard var buffer = pool.take() else { Issue.record("pool empty"); return }
        let batched = [UInt8](repeating: 0xB1, count: 300)
        _ = buffer.copy(from: batched)
        try file.submitWrite(buffer, count: 300, at: 100, tag: 1)
        // Same block as the batched write: waits for it by reaping, then merges after it.
        let direct = [UInt8](repeating: 0xD1, count: 50)
        #expect(try file.write(direct, at: 350) == 50)
        model.replaceSubrange(100..<400, with: batched)
        model.replaceSubrange(350..<400, with: direct)
        // More batched unaligned writes than bounce buffers, on separate blocks: each submit
        // beyond them makes its predecessors progress.
        for slot in 0..<7 {
            guard var next = pool.take() else { break }
            let bytes = [UInt8](repeating: UInt8(slot), count: 1000)
            _ = next.copy(from: bytes)
            let offset = 100_000 + slot * 10_000 + 3
            try file.submitWrite(next, count: 1000, at: Int64(offset), tag: 2)
            model.replaceSubrange(offset..<offset + 1000, with: bytes)
        }
        var written = 0
        while engine.inFlight > 0 || written < 8 {
            let handed = try engine.reap(minimum: 1) { completion in
                #expect(completion.errno == nil)
            }
            written += handed
            if handed == 0 && engine.inFlight == 0 { break }
        }
        #expect(written == 8)
        #expect(bounce.available == 2 && pool.available == 8)
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: 1 << 20), model, "the file after all the writes")
    }

    @Test(.timeLimit(.minutes(1))) func cancellingRealignedRequestsLosesNoBufferAndLeavesNoLock() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let before = TestSupport.pattern(count: 1 << 20, seed: 204)
        try TestSupport.referenceWrite(path, before)
        let engine = try TestSupport.ringEngine(queueDepth: 32)
        let pool = try BufferPool(count: 16, bufferBytes: 8192)
        let file = try DirectFile(path: path, engine: engine)
        for slot in 0..<16 {
            guard var buffer = pool.take() else { Issue.record("pool empty"); return }
            _ = buffer.copy(from: [UInt8](repeating: UInt8(slot), count: 5000))
            try file.submitWrite(buffer, count: 5000, at: Int64(slot * 5000 + 7), tag: 7)
        }
        try engine.cancel(tag: 7)
        var outcomes: [String: Int] = [:]
        var reaped = 0
        while reaped < 16 {
            try engine.reap(minimum: 1) { completion in
                reaped += 1
                outcomes[completion.errno.map { "\($0)" } ?? "written", default: 0] += 1
                #expect(completion.errno == nil ? completion.bytes == 5000 : completion.errno == .canceled, "\(completion.bytes) \(String(describing: completion.errno))")
            }
        }
        #expect(pool.available == 16, "\(outcomes)")
        #expect(engine.smallBouncePool.map { $0.available == $0.count } ?? true)
        // Every block lock was given back: a synchronous write over all the edges goes through.
        #expect(try file.write([UInt8](repeating: 0xEE, count: 80_010), at: 3) == 80_010)
        var expected = before
        expected.replaceSubrange(3..<80_013, with: [UInt8](repeating: 0xEE, count: 80_010))
        let after = try TestSupport.referenceRead(path, count: 1 << 20)
        // Bytes past the synchronous write are the original or a write that was not cancelled.
        TestSupport.expectSameBytes(Array(after[0..<80_013]), Array(expected[0..<80_013]), "the synchronous write")
    }
}
