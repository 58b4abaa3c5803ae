import Glibc
import SystemPackage
import Testing
@testable import DirectIO
import DirectIOTesting
import DIOCommands

/// The engine's handling of what a kernel may return, driven through a backend that injects
/// short transfers, EAGAIN, EINTR, EIO and reordered completions into real I/O on real files
/// (RELIABILITY-CASES 7, 8, 9, 18). Every byte is compared with pread/pwrite.
@Suite struct FaultInjectionTests {
    static let engines: [IOEngine.Choice] = [.ioUring, .blocking]

    private func engine(_ choice: IOEngine.Choice, _ plan: FaultPlan) throws -> IOEngine {
        try TestSupport.skippingIfMemlockRefuses { try IOEngine.injectingFaults(plan, choice, queueDepth: 16, fixedBufferSlots: 64, fixedFileSlots: 16) }
    }

    private static let everything = FaultPlan(seed: 5, shortTransferPercent: 30, againPercent: 10, interruptPercent: 10, delayPercent: 30)

    /// The realignment layer's every step (merge reads, bounced and direct pieces, vectored
    /// writes, writes run as system calls) under the same faults, through DirectFile:
    /// byte-exact against the model.
    @Test(arguments: engines)
    func unalignedRequestsStayByteExact(choice: IOEngine.Choice) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let plan = FaultPlan(seed: 193, shortTransferPercent: 30, shortGranularity: 512, againPercent: 10, interruptPercent: 10, delayPercent: 30)
        let faulty = try engine(choice, plan)
        try BounceWorkload.run(path: directory + "/data", engine: faulty, operations: 200, span: 300_000, seed: 194)
        #expect(faulty.statistics.retries > 0 && faulty.statistics.resubmissions > 0, "\(faulty.statistics)")
        // On a ring the synchronous writes ran as system calls, under the same faults (their
        // short remainders went back through the ring).
        #expect(choice == .blocking || faulty.statistics.systemCallRequests > 0, "\(faulty.statistics)")
    }

    @Test(arguments: engines)
    func retriesAndRemaindersStillDeliverExactBytes(choice: IOEngine.Choice) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let reference = TestSupport.pattern(count: 4 << 20, seed: 31)
        try TestSupport.referenceWrite(path, reference)
        let engine = try engine(choice, Self.everything)
        let pool = try BufferPool(count: 16, bufferBytes: 65536)
        engine.register(pool)
        let file = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: engine)

        var random = SplitMix(seed: 3)
        var submitted = 0, checked = 0
        while checked < 400 {
            while submitted < 400, let buffer = pool.take() {
                let block = Int(random.next() % 64)
                try file.submitRead(into: buffer, at: Int64(block * 65536), tag: UInt64(block))
                submitted += 1
            }
            try engine.reap(minimum: 1) { completion in
                var completion = completion
                let start = Int(completion.tag) * 65536
                #expect(completion.outcome == IOOutcome(bytes: 65536, errno: nil))
                let bytes = completion.takeBuffer()?.bytes()
                #expect(bytes == Array(reference[start..<start + 65536]))
                checked += 1
            }
        }
        var large = try AlignedBuffer(byteCount: 1 << 20)
        let got = try file.read(into: &large, at: 1 << 20)
        #expect(got == 1 << 20)
        #expect(large.bytes() == Array(reference[(1 << 20)..<(2 << 20)]))

        let vectors = try AlignedBuffer(byteCount: 5 * 16384)
        let pieces = (0..<5).map { UnsafeMutableRawBufferPointer(start: vectors.baseAddress + $0 * 16384, count: 16384) }
        let vectored = try file.read(into: pieces, at: 3 << 20)
        #expect(vectored == 5 * 16384)
        #expect(vectors.bytes() == Array(reference[(3 << 20)..<(3 << 20) + 5 * 16384]))

        let stats = engine.statistics
        #expect(stats.retries > 0 && stats.resubmissions > 0)
        #expect(pool.available == pool.count)
    }

    @Test(arguments: engines)
    func writesUnderFaultsLandExactlyOnce(choice: IOEngine.Choice) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let engine = try engine(choice, Self.everything)
        let pool = try BufferPool(count: 16, bufferBytes: 65536)
        engine.register(pool)
        let file = try DirectFile(path: path, options: OpenOptions(create: true), engine: engine)
        var model = [UInt8]()
        var next = 0, done = 0
        while done < 64 {
            while next < 64, var buffer = pool.take() {
                buffer.copy(from: TestSupport.pattern(count: 65536, seed: UInt64(500 + next)))
                try file.submitWrite(buffer, at: Int64(next * 65536), tag: UInt64(next))
                next += 1
            }
            try engine.reap(minimum: 1) { completion in
                #expect(completion.outcome == IOOutcome(bytes: 65536, errno: nil))
                done += 1
            }
        }
        for block in 0..<64 { model += TestSupport.pattern(count: 65536, seed: UInt64(500 + block)) }
        try file.sync()
        #expect(try TestSupport.referenceRead(path, count: model.count + 1) == model)
        #expect(engine.statistics.resubmissions > 0)
    }

    @Test(arguments: engines)
    func anIOErrorReachesTheCallerWithItsRangeAndSparesTheRest(choice: IOEngine.Choice) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let reference = TestSupport.pattern(count: 1 << 20, seed: 32)
        try TestSupport.referenceWrite(path, reference)
        let bad: Int64 = 5 * 65536 + 100
        let engine = try engine(choice, FaultPlan(seed: 1, ioErrorOffsets: [bad]))
        let pool = try BufferPool(count: 16, bufferBytes: 65536)
        let file = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: engine)
        for block in 0..<16 {
            guard let buffer = pool.take() else { Issue.record("pool empty"); return }
            try file.submitRead(into: buffer, at: Int64(block * 65536), tag: UInt64(block))
        }
        var failures: [(Int64, Errno?)] = []
        try engine.reap(minimum: 16) { completion in
            var completion = completion
            let buffer = completion.takeBuffer()
            if completion.outcome.succeeded {
                let start = Int(completion.tag) * 65536
                let bytes = buffer?.bytes()
                #expect(bytes == Array(reference[start..<start + 65536]))
            } else {
                failures.append((completion.offset, completion.outcome.errno))
            }
        }
        #expect(failures.count == 1)
        #expect(failures.first?.0 == Int64(5 * 65536))
        #expect(failures.first?.1 == .ioError)

        var buffer = try AlignedBuffer(byteCount: 1 << 20)
        let error = #expect(throws: DirectIOError.self) { _ = try file.read(into: &buffer, at: 0) }
        #expect(error?.code == .ioError)
        #expect(error?.path == path)
        #expect(error?.offset == 0)
        #expect(error?.length == 1 << 20)
    }

    /// An error names what carried the request: on a ring, a synchronous read's opcode, but the
    /// system call for its writes, syncs and the write of a read-modify-write (which run on the
    /// caller's thread); a batched write's opcode; on the blocking engine, system calls only.
    /// The bytes around the failed range are untouched.
    @Test(arguments: engines)
    func errorsNameTheCallThatCarriedTheRequest(choice: IOEngine.Choice) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let reference = TestSupport.pattern(count: 1 << 20, seed: 34)
        try TestSupport.referenceWrite(path, reference)
        let bad: Int64 = 3 * 65536 + 7
        let engine = try engine(choice, FaultPlan(seed: 2, ioErrorOffsets: [bad]))
        let pool = try BufferPool(count: 2, bufferBytes: 65536)
        engine.register(pool)
        let file = try DirectFile(path: path, engine: engine)
        let ring = choice == .ioUring

        var aligned = try AlignedBuffer(byteCount: 65536)
        let readError = #expect(throws: DirectIOError.self) { _ = try file.read(into: &aligned, at: 3 * 65536) }
        #expect(readError?.systemCall == (ring ? "READ" : "pread"))
        aligned.copy(from: TestSupport.pattern(count: 65536, seed: 35))
        let writeError = #expect(throws: DirectIOError.self) { _ = try file.write(aligned, at: 3 * 65536) }
        #expect(writeError?.systemCall == "pwrite")
        #expect(writeError?.offset == Int64(3 * 65536))
        // Unaligned at its end only: the tail block's read lies past the bad offset and
        // succeeds; the write covering it fails. From misaligned memory the whole range is
        // bounced and goes as one pwrite; from aligned memory the caller's full block goes
        // beside the bounced tail, as one pwritev. (From memory at a fixed alignment: an
        // array's address, and with it the call, would vary with the allocator.)
        var source = try AlignedBuffer(byteCount: 8192)
        source.withUnsafeMutableBytes { _ = $0.initializeMemory(as: UInt8.self, repeating: 1) }
        for (skew, call) in [(8, "pwrite"), (0, "pwritev")] {
            let unaligned = UnsafeRawBufferPointer(start: source.baseAddress + skew, count: 5000)
            let unalignedError = #expect(throws: DirectIOError.self) { _ = try file.write(unaligned, at: 3 * 65536) }
            #expect(unalignedError?.systemCall == call, "memory \(skew) bytes past alignment")
            #expect(unalignedError?.errno == .ioError)
        }

        guard var buffer = pool.take() else { Issue.record("pool empty"); return }
        buffer.copy(from: TestSupport.pattern(count: 65536, seed: 36))
        try file.submitWrite(buffer, at: 3 * 65536, tag: 1)
        var batched: IOOutcome?
        try engine.reap(minimum: 1) { completion in batched = completion.outcome }
        #expect(batched?.errno == .ioError)
        #expect(try TestSupport.referenceRead(path, count: reference.count) == reference)
    }

    @Test func theSameSeedInjectsTheSameFaults() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, TestSupport.pattern(count: 1 << 20, seed: 33))
        var runs: [EngineStatistics] = []
        for _ in 0..<2 {
            let engine = try engine(.blocking, Self.everything)
            let file = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: engine)
            var buffer = try AlignedBuffer(byteCount: 65536)
            for block in 0..<16 { _ = try file.read(into: &buffer, at: Int64(block * 65536)) }
            runs.append(engine.statistics)
        }
        #expect(runs[0] == runs[1])
        #expect(runs[0].retries + runs[0].resubmissions > 0)
    }
}
