import Glibc
import SystemPackage
import Testing
@testable import DirectIO
import DirectIOTesting
import DIOCommands

/// The in-memory device of DirectIOTesting: with every fault class injected at random, the
/// bytes that reach the device are exactly the bytes asked for, and the only errors callers
/// see are the ones they must (EIO, ENOSPC, ECANCELED), with their offsets.
@Suite struct MemoryDeviceTests {
    static let everything = FaultPlan(seed: 77, shortTransferPercent: 25, againPercent: 10, interruptPercent: 10, delayPercent: 30)

    /// Random aligned batched writes and misaligned synchronous writes (bounced, with
    /// read-modify-write), under `plan`; returns the model of what the file must hold.
    private func workload(_ file: borrowing DirectFile, _ engine: IOEngine, seed: UInt64) throws -> [UInt8] {
        var model = [UInt8](repeating: 0, count: 2 << 20)
        var written = 0
        let pool = try BufferPool(count: 8, bufferBytes: 65536)
        engine.register(pool)
        var random = SplitMix(seed: seed)
        var scratch = try AlignedBuffer(byteCount: 16384)
        for round in 0..<60 {
            if round % 2 == 0 {
                var pending = 0
                // Four different blocks: two writes in flight to one block may land in either
                // order (a short write's remainder can come after the other write), on any device.
                let first = Int(random.next() % 32)
                for index in 0..<4 {
                    guard var buffer = pool.take() else { break }
                    let block = (first + index * 8) % 32
                    let bytes = TestSupport.pattern(count: 65536, seed: random.next())
                    _ = buffer.copy(from: bytes)
                    try file.submitWrite(buffer, at: Int64(block * 65536), tag: UInt64(block))
                    model.replaceSubrange(block * 65536..<(block + 1) * 65536, with: bytes)
                    written = max(written, (block + 1) * 65536)
                    pending += 1
                }
                while pending > 0 {
                    pending -= try engine.reap(minimum: 1) { completion in
                        #expect(completion.outcome == IOOutcome(bytes: 65536, errno: nil))
                    }
                }
            } else {
                // From memory at a fixed distance past a page boundary (not an array, whose
                // address varies from run to run and with it what must be bounced), so the
                // same seed asks for the same device I/Os.
                let offset = Int(random.next() % UInt64((2 << 20) - 9000))
                let bytes = TestSupport.pattern(count: 1 + Int(random.next() % 9000), seed: random.next())
                let skew = Int(random.next() % 4096)
                scratch.withUnsafeMutableBytes { raw in
                    raw.baseAddress.map { ($0 + skew).copyMemory(from: bytes, byteCount: bytes.count) }
                }
                let source = UnsafeRawBufferPointer(start: scratch.baseAddress + skew, count: bytes.count)
                #expect(try file.write(source, at: Int64(offset)) == bytes.count)
                model.replaceSubrange(offset..<offset + bytes.count, with: bytes)
                written = max(written, offset + bytes.count)
            }
        }
        return Array(model[0..<written])
    }

    @Test func everyFaultClassAtRandomStillPutsExactlyTheAskedBytesOnTheDevice() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        var statistics: [EngineStatistics] = []
        for _ in 0..<2 {
            let device = MemoryDevice()
            let engine = try IOEngine.inMemory(device, faults: Self.everything, queueDepth: 16)
            #expect(engine.kind == .memory)
            let path = directory + "/data"
            let file = try DirectFile(path: path, options: OpenOptions(create: true), engine: engine)
            let model = try workload(file, engine, seed: 5)
            // Taken before the read-back below: that read lands in an array, whose address (and
            // with it whether the read is bounced) depends on the allocator, not on the seed.
            statistics.append(engine.statistics)
            TestSupport.expectSameBytes(try #require(device.contents(ofFileAt: path)), model, "device contents under faults")
            // Nothing reached the disk: the device is memory.
            #expect(TransferFixture.allocatedBytes(path) == 0)
            var reread = [UInt8](repeating: 0, count: model.count)
            #expect(try file.read(into: &reread, at: 0) == model.count)
            TestSupport.expectSameBytes(reread, model, "read back under faults")
            unlink(path)
        }
        // Faults were really injected, and the same seed replays the same run.
        #expect(statistics[0].retries > 0 && statistics[0].resubmissions > 0)
        #expect(statistics[0] == statistics[1])
    }

    @Test func ioErrorNoSpaceAndCancellationReachTheCallerWithTheirOffsets() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let device = MemoryDevice()
        let path = directory + "/data"
        let plan = FaultPlan(seed: 3, ioErrorOffsets: [(1 << 20) + 100], noSpaceOffsets: [3 << 20])
        let engine = try IOEngine.inMemory(device, faults: plan)
        let file = try DirectFile(path: path, options: OpenOptions(create: true), engine: engine)
        var buffer = try AlignedBuffer(byteCount: 65536)
        let bytes = TestSupport.pattern(count: 65536, seed: 1)
        _ = buffer.copy(from: bytes)
        #expect(try file.write(buffer, at: 0) == 65536)
        let full = #expect(throws: DirectIOError.self) { try file.write(buffer, at: 3 << 20) }
        #expect(full?.code == .noSpace)
        #expect(full?.offset == 3 << 20)
        // EIO is injected on reads and writes covering the offset.
        let failedWrite = #expect(throws: DirectIOError.self) { try file.write(buffer, at: 1 << 20) }
        #expect(failedWrite?.code == .ioError)
        let broken = #expect(throws: DirectIOError.self) { try file.read(into: &buffer, at: 1 << 20) }
        #expect(broken?.code == .ioError)
        #expect(broken?.offset == 1 << 20)
        // The data before the failures is intact on the device.
        TestSupport.expectSameBytes(Array((device.contents(ofFileAt: path) ?? [])[0..<65536]), bytes, "data before the faults")

        // ECANCELED injected on every request: each batched read reports it and returns its buffer.
        let cancelling = try IOEngine.inMemory(device, faults: FaultPlan(seed: 4, cancelPercent: 100))
        let pool = try BufferPool(count: 4, bufferBytes: 4096)
        let reader = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: cancelling)
        for index in 0..<4 {
            guard let slot = pool.take() else { break }
            try reader.submitRead(into: slot, at: Int64(index * 4096), tag: UInt64(index))
        }
        var outcomes: [Errno?] = []
        while outcomes.count < 4 {
            try cancelling.reap(minimum: 1) { completion in outcomes.append(completion.outcome.errno) }
        }
        #expect(outcomes == Array(repeating: Errno.canceled, count: 4))
        #expect(pool.available == 4)
    }
}
