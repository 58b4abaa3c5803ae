import Foundation
import Glibc
import Synchronization
import Testing
@testable import DirectIO
import DIOCommands

/// Any memory, any offset, any length: byte-exact against a model and pread
/// (RELIABILITY-CASES 1, 2, 7).
@Suite struct BounceTests {
    @Test(arguments: EngineTests.engines)
    func unalignedReadsAndWritesOnExt4MatchTheReference(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        try BounceWorkload.run(path: directory + "/data", engine: config.make(), operations: 300, span: 300_000, seed: 41)
    }

    @Test func tmpfsTakesEveryRequestDirectly() throws {
        let directory = "/dev/shm/directio-bounce-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        for (index, config) in EngineTests.engines.enumerated() {
            try BounceWorkload.run(path: directory + "/random\(index)", engine: config.make(), operations: 200, span: 300_000, seed: 43 + UInt64(index))
        }
        let engine = try TestSupport.ringEngine()
        let file = try DirectFile(path: path, options: OpenOptions(create: true), engine: engine)
        let bytes = TestSupport.pattern(count: 10_001, seed: 42)
        #expect(try file.write(bytes, at: 77) == 10_001)
        var back = [UInt8](repeating: 0, count: 10_001)
        #expect(try file.read(into: &back, at: 77) == 10_001)
        #expect(back == bytes)
        // tmpfs has alignment 1: nothing needed bouncing.
        #expect(engine.statistics.transfers.bytesBounced == 0)
    }

    @Test func adjacentUnalignedWritersSharingABlockLoseNothing() throws {
        // Writers on separate threads, each with its own engine and file, write disjoint byte
        // ranges whose edges share 512-byte blocks: each write's read-modify-write of a shared
        // block must not overwrite the neighbour's bytes.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, [UInt8](repeating: 0, count: 64 * 1000 + 4096))
        let threads = 8
        let writesPerThread = 40
        let done = DispatchGroup()
        let failures = Mutex<[String]>([])
        for thread in 0..<threads {
            done.enter()
            Thread {
                defer { done.leave() }
                do {
                    let file = try DirectFile(path: path, engine: IOEngine(queueDepth: 4))
                    for round in 0..<writesPerThread {
                        // Range k covers [k*1000, (k+1)*1000): block edges never line up.
                        let range = round * threads + thread
                        guard range < 64 else { break }
                        let bytes = [UInt8](repeating: UInt8(1 + range), count: 1000)
                        _ = try file.write(bytes, at: Int64(range * 1000))
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }.start()
        }
        done.wait()
        #expect(failures.withLock { $0 } == [])
        var expected = [UInt8]()
        for range in 0..<64 { expected += [UInt8](repeating: UInt8(1 + range), count: 1000) }
        #expect(try TestSupport.referenceRead(path, count: 64_000) == expected)
    }

    @Test(arguments: EngineTests.engines)
    func batchedRequestsWithMisalignedMemoryAreRealignedInTheirOwnBuffer(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        var model = TestSupport.pattern(count: 1 << 20, seed: 71)
        try TestSupport.referenceWrite(path, model)
        let engine = try config.make(queueDepth: 8)
        let pool = try BufferPool(count: 8, bufferBytes: 65536 + 4096)
        engine.register(pool)
        let file = try DirectFile(path: path, engine: engine)
        var random = SplitMix(seed: 72)
        for round in 0..<30 {
            // Rounds alternate: eight reads, or eight writes to disjoint ranges, so every
            // read knows what the file holds.
            let isWrite = round % 2 == 0
            var requests: [UInt64: (offset: Int, count: Int, bufferOffset: Int, bytes: [UInt8])] = [:]
            for slot in 0..<8 {
                guard var buffer = pool.take() else { Issue.record("pool empty"); return }
                let bufferOffset = Int(random.next() % 4096)
                if isWrite {
                    // Whole 512-byte blocks inside this slot's 128 KiB; memory anywhere.
                    let offset = slot * 131_072 + Int(random.next() % 64) * 512
                    let count = (1 + Int(random.next() % 120)) * 512
                    let bytes = TestSupport.pattern(count: count, seed: UInt64(round * 8 + slot))
                    buffer.withUnsafeMutableBytes { raw in
                        UnsafeMutableRawBufferPointer(rebasing: raw[bufferOffset..<bufferOffset + count]).copyBytes(from: bytes)
                    }
                    requests[UInt64(slot)] = (offset, count, bufferOffset, bytes)
                    try file.submitWrite(buffer, bufferOffset: bufferOffset, count: count, at: Int64(offset), tag: UInt64(slot))
                } else {
                    let offset = Int(random.next() % UInt64((1 << 20) + 4096))
                    let count = 1 + Int(random.next() % 60_000)
                    requests[UInt64(slot)] = (offset, count, bufferOffset, [])
                    try file.submitRead(into: buffer, bufferOffset: bufferOffset, count: count, at: Int64(offset), tag: UInt64(slot))
                }
            }
            try engine.reap(minimum: 8) { completion in
                var completion = completion
                guard let request = requests[completion.tag], let buffer = completion.takeBuffer() else { return }
                #expect(completion.offset == Int64(request.offset))
                let bytes = Array(UnsafeRawBufferPointer(start: buffer.baseAddress + request.bufferOffset, count: request.count))
                if isWrite {
                    #expect(completion.outcome == IOOutcome(bytes: request.count, errno: nil))
                    TestSupport.expectSameBytes(bytes, request.bytes, "round \(round): the written buffer comes back as given")
                } else {
                    let available = max(0, min(request.count, model.count - request.offset))
                    #expect(completion.outcome == IOOutcome(bytes: available, errno: nil))
                    TestSupport.expectSameBytes(Array(bytes.prefix(available)), available > 0 ? Array(model[request.offset..<request.offset + available]) : [], "round \(round): read at \(request.offset)+\(request.count)")
                }
            }
            if isWrite {
                for request in requests.values { model.replaceSubrange(request.offset..<request.offset + request.count, with: request.bytes) }
            }
        }
        #expect(engine.statistics.transfers.bytesShifted > 0)
        #expect(engine.statistics.transfers.bytesBounced == 0)
        #expect(file.statistics.bytesShifted == engine.statistics.transfers.bytesShifted)
        #expect(file.statistics.bytesDirect > 0)
        try file.sync()
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: 1 << 20), model, "file against the model")
    }

    @Test func tenTimesMoreMisalignedWritersThanBounceBuffersAllComplete() throws {
        // Two shared bounce buffers, twenty writers on their own threads and engines: the
        // waiting ones all finish, memory stays at the pool's two buffers, nothing deadlocks
        // (RELIABILITY-CASES 24).
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, [UInt8](repeating: 0, count: 20 * 20 * 3000 + 4096))
        let pool = try BufferPool(count: 2, bufferBytes: 65536)
        let done = DispatchGroup()
        let failures = Mutex<[String]>([])
        for writer in 0..<20 {
            done.enter()
            Thread {
                defer { done.leave() }
                do {
                    let file = try DirectFile(path: path, options: OpenOptions(bouncePool: pool), engine: IOEngine(queueDepth: 2))
                    for round in 0..<20 {
                        let range = round * 20 + writer
                        _ = try file.write([UInt8](repeating: UInt8(1 + range % 250), count: 3000), at: Int64(range * 3000))
                    }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }.start()
        }
        done.wait()
        #expect(failures.withLock { $0 } == [])
        var expected = [UInt8]()
        for range in 0..<400 { expected += [UInt8](repeating: UInt8(1 + range % 250), count: 3000) }
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: expected.count), expected, "after 400 unaligned writes")
        #expect(pool.available == 2)
        #expect(pool.count == 2)
    }

    @Test func aCallerThatWillNotWaitGetsWouldBlockAndNothingIsWritten() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let original = TestSupport.pattern(count: 65536, seed: 81)
        try TestSupport.referenceWrite(path, original)
        let pool = try BufferPool(count: 1, bufferBytes: 65536)
        let file = try DirectFile(path: path, options: OpenOptions(bouncePool: pool, waitForBounceBuffers: false))
        do {
            guard let held = pool.take() else { Issue.record("pool empty"); return }
            let error = #expect(throws: DirectIOError.self) { _ = try file.write([1, 2, 3, 4, 5], at: 1000) }
            #expect(error?.code == .wouldBlock)
            #expect(error?.detail?.contains("nothing was transferred") == true)
            _ = consume held
        }
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: 65536), original, "file after the refused write")
        #expect(try file.write([1, 2, 3, 4, 5], at: 1000) == 5)
        #expect(try TestSupport.referenceRead(path, count: 5, at: 1000) == [1, 2, 3, 4, 5])
    }

    @Test func spansGoThroughTheSamePaths() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let file = try DirectFile(path: path, options: OpenOptions(create: true))
        let bytes = TestSupport.pattern(count: 5000, seed: 91)
        let written = try file.write(bytes.span.bytes, at: 333)
        #expect(written == 5000)
        #expect(try TestSupport.referenceRead(path, count: 5000, at: 333) == bytes)
        var back = [UInt8](repeating: 0, count: 5000)
        let got = try back.withUnsafeMutableBytes { raw in
            var span = raw.mutableBytes
            return try file.read(into: &span, at: 333)
        }
        #expect(got == 5000)
        #expect(back == bytes)
    }

    @Test func misalignedMemoryCanBeRefusedInsteadOfBounced() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let file = try DirectFile(path: directory + "/data", options: OpenOptions(create: true, misaligned: .fail))
        let error = #expect(throws: DirectIOError.self) { _ = try file.write([1, 2, 3], at: 5) }
        #expect(error?.code == .misaligned)
    }

    @Test func waitingForABounceBufferNeverFailsAndNowaitSaysWouldBlock() throws {
        let pool = try BufferPool(count: 2, bufferBytes: 4096)
        guard let first = pool.take(), let second = pool.take() else { Issue.record("pool empty"); return }
        var extra = false
        if let _ = pool.take() { extra = true }
        #expect(!extra)
        let returned = Mutex(false)
        let held = Mutex<PoolBuffer?>(first)
        let giver = Thread {
            usleep(50_000)
            returned.withLock { $0 = true }
            held.withLock { $0 = nil }  // gives `first` back to the pool
        }
        giver.start()
        var waited = false
        let third = pool.takeWaiting(waited: &waited)  // blocks until `first` comes back
        #expect(waited)
        #expect(returned.withLock { $0 })
        #expect(pool.waits == 1)
        _ = consume second
        _ = consume third
        #expect(pool.available == 2)
    }
}
