import Foundation
import Glibc
import Synchronization
import SystemPackage
import Testing
@testable import DirectIO
import DIOCommands

/// The same suite on both engines: every byte read or written through DirectIO is compared
/// with a plain pread/pwrite on a separate buffered descriptor.
@Suite struct EngineTests {
    static let engines: [EngineConfig] = [
        EngineConfig(choice: .ioUring, flags: .anyThread),
        EngineConfig(choice: .ioUring, flags: .threadPerCore),
        EngineConfig(choice: .blocking, flags: .anyThread),
    ]

    @Test(arguments: engines)
    func batchedRandomReadsMatchPread(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let fileBytes = 8 << 20
        let reference = TestSupport.pattern(count: fileBytes, seed: 1)
        try TestSupport.referenceWrite(path, reference)

        let engine = try config.make(queueDepth: 32)
        #expect(engine.kind == (config.choice == .ioUring ? .ioUring : .blocking))
        #expect(engine.ringFlags == (config.choice == .ioUring ? config.flags : nil))
        let pool = try BufferPool(count: 32, bufferBytes: 16384)
        let registration = engine.registering(pool)
        let registered = config.choice == .ioUring && TestSupport.registered(registration)
        // After the engine's bounce reserve, when that is registered.
        let first = UInt16(MemoryLimits.pinningIsFree ? engine.bouncePool.count + (engine.smallBouncePool?.count ?? 0) : 0)
        if registered { #expect(registration == .registered(firstSlot: first)) }
        let file = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: engine)
        let isDirect = file.isDirect
        #expect(isDirect)

        var generator = SplitMix(seed: 7)
        let blocks = fileBytes / 16384
        var checked = 0
        var submitted = 0
        let total = 600
        while checked < total {
            while submitted < total, let buffer = pool.take() {
                let block = Int(generator.next() % UInt64(blocks))
                try file.submitRead(into: buffer, at: Int64(block * 16384), tag: UInt64(block))
                submitted += 1
            }
            try engine.reap(minimum: 1) { completion in
                var completion = completion
                let start = Int(completion.tag) * 16384
                #expect(completion.outcome == IOOutcome(bytes: 16384, errno: nil))
                #expect(completion.offset == Int64(start))
                let buffer = completion.takeBuffer()
                #expect(buffer?.bytes() == Array(reference[start..<start + 16384]))
                checked += 1
            }
        }
        #expect(pool.available == pool.count)
        // Unregistered (refused under RLIMIT_MEMLOCK), no request may name a fixed buffer.
        #expect(engine.statistics.fixedBufferRequests == (registered ? total : 0))
    }

    @Test(arguments: engines)
    func batchedWritesLandWherePreadFindsThem(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let blockBytes = 4096
        let blocks = 512
        var model = [UInt8](repeating: 0, count: blocks * blockBytes)
        try TestSupport.referenceWrite(path, model)

        let engine = try config.make(queueDepth: 16)
        let pool = try BufferPool(count: 16, bufferBytes: blockBytes)
        engine.register(pool)
        let file = try DirectFile(path: path, engine: engine)
        var generator = SplitMix(seed: 11)
        var outstanding = 0
        for round in 0..<1000 {
            guard var buffer = pool.take() else {
                try engine.reap(minimum: 1) { completion in
                    #expect(completion.outcome.bytes == blockBytes && completion.outcome.succeeded)
                    outstanding -= 1
                }
                continue
            }
            // Later writes to a block must not race earlier ones still in flight: one block
            // per round, chosen among blocks not in flight by using distinct block ranges.
            let block = (round * 37 + Int(generator.next() % 7)) % blocks
            let bytes = TestSupport.pattern(count: blockBytes, seed: UInt64(round))
            buffer.copy(from: bytes)
            try engine.reap(minimum: outstanding) { completion in
                #expect(completion.outcome.bytes == blockBytes && completion.outcome.succeeded)
                outstanding -= 1
            }
            model.replaceSubrange(block * blockBytes..<(block + 1) * blockBytes, with: bytes)
            try file.submitWrite(buffer, at: Int64(block * blockBytes), tag: UInt64(round))
            outstanding += 1
        }
        try engine.reap(minimum: outstanding) { completion in
            #expect(completion.outcome.succeeded)
            outstanding -= 1
        }
        #expect(outstanding == 0)
        try file.sync(dataOnly: true)
        #expect(try TestSupport.referenceRead(path, count: model.count) == model)
    }

    @Test(arguments: engines)
    func concurrentBatchedWritesToDistinctBlocks(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let blockBytes = 8192
        let blocks = 256
        let engine = try config.make(queueDepth: 32)
        let pool = try BufferPool(count: 32, bufferBytes: blockBytes)
        engine.register(pool)
        let file = try DirectFile(path: path, options: OpenOptions(create: true, truncate: true), engine: engine)
        var expected = [UInt8]()
        var next = 0
        var done = 0
        while done < blocks {
            while next < blocks, var buffer = pool.take() {
                let bytes = TestSupport.pattern(count: blockBytes, seed: UInt64(1000 + next))
                buffer.copy(from: bytes)
                try file.submitWrite(buffer, at: Int64(next * blockBytes), tag: UInt64(next))
                next += 1
            }
            try engine.reap(minimum: 1) { completion in
                #expect(completion.outcome == IOOutcome(bytes: blockBytes, errno: nil))
                done += 1
            }
        }
        for block in 0..<blocks { expected += TestSupport.pattern(count: blockBytes, seed: UInt64(1000 + block)) }
        try file.sync()
        let result1 = try file.size()
        #expect(result1 == Int64(blocks * blockBytes))
        #expect(try TestSupport.referenceRead(path, count: expected.count + 1) == expected)
    }

    @Test(arguments: engines)
    func synchronousRoundTripThroughPoolAndAlignedBuffers(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let engine = try config.make()
        let pool = try BufferPool(count: 2, bufferBytes: 65536)
        engine.register(pool)
        let file = try DirectFile(path: path, options: OpenOptions(create: true), engine: engine)

        let first = TestSupport.pattern(count: 65536, seed: 3)
        guard var buffer = pool.take() else { Issue.record("pool empty"); return }
        buffer.copy(from: first)
        let result2 = try file.write(buffer, at: 0)
        #expect(result2 == 65536)

        var aligned = try AlignedBuffer(byteCount: 8192)
        let second = TestSupport.pattern(count: 8192, seed: 4)
        aligned.copy(from: second)
        let result3 = try file.write(aligned, at: 65536)
        #expect(result3 == 8192)
        #expect(try TestSupport.referenceRead(path, count: 80000) == first + second)

        guard var readBack = pool.take() else { Issue.record("pool empty"); return }
        let result4 = try file.read(into: &readBack, at: 0)
        #expect(result4 == 65536)
        #expect(readBack.bytes() == first)
        var readAligned = try AlignedBuffer(byteCount: 8192)
        let result5 = try file.read(into: &readAligned, count: 4096, at: 69632)
        #expect(result5 == 4096)
        #expect(readAligned.bytes(count: 4096) == Array(second[4096...]))
    }

    /// On a ring, the writes and syncs a synchronous call waits for run as system calls on the
    /// caller's thread (io_uring would complete them on a kernel worker); reads and batched
    /// requests stay in the ring. Every byte is checked against pread, and with a batched write
    /// in flight beside a synchronous one both land.
    @Test(arguments: engines)
    func synchronousWritesAndSyncsRunAsSystemCallsOnRings(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        var model = TestSupport.pattern(count: 1 << 20, seed: 40)
        try TestSupport.referenceWrite(path, model)
        let engine = try config.make(queueDepth: 8)
        let pool = try BufferPool(count: 2, bufferBytes: 65536)
        engine.register(pool)
        let file = try DirectFile(path: path, engine: engine)
        let ring = config.choice == .ioUring
        var expected = 0
        func calls() -> Int { engine.statistics.systemCallRequests }

        // A registered buffer (WRITE_FIXED in the ring) and plain aligned memory.
        guard var registered = pool.take() else { Issue.record("pool empty"); return }
        let first = TestSupport.pattern(count: 65536, seed: 41)
        registered.copy(from: first)
        #expect(try file.write(registered, at: 131072) == 65536)
        model.replaceSubrange(131072..<196608, with: first)
        var aligned = try AlignedBuffer(byteCount: 8192)
        let second = TestSupport.pattern(count: 8192, seed: 42)
        aligned.copy(from: second)
        #expect(try file.write(aligned, at: 4096) == 8192)
        model.replaceSubrange(4096..<12288, with: second)
        expected += 2
        #expect(calls() == (ring ? expected : 0))

        // An unaligned write: its edge read goes through the ring, its write is a system call.
        let third = TestSupport.pattern(count: 4000, seed: 43)
        #expect(try file.write(third, at: 300_001) == 4000)
        model.replaceSubrange(300_001..<304_001, with: third)
        expected += 1
        #expect(calls() == (ring ? expected : 0))

        // A batched write in flight while a synchronous one runs: both land, only one is a call.
        guard var batched = pool.take() else { Issue.record("pool empty"); return }
        let fourth = TestSupport.pattern(count: 65536, seed: 44)
        batched.copy(from: fourth)
        try file.submitWrite(batched, at: 524_288, tag: 7)
        model.replaceSubrange(524_288..<589_824, with: fourth)
        let fifth = TestSupport.pattern(count: 4096, seed: 45)
        aligned.copy(from: fifth)
        #expect(try file.write(aligned, count: 4096, at: 786_432) == 4096)
        model.replaceSubrange(786_432..<790_528, with: fifth)
        expected += 1
        var reaped = 0
        try engine.reap(minimum: 1) { completion in
            #expect(completion.tag == 7 && completion.outcome.bytes == 65536 && completion.outcome.succeeded)
            reaped += 1
        }
        #expect(reaped == 1)
        try file.sync(dataOnly: true)
        expected += 1
        #expect(calls() == (ring ? expected : 0))

        // Reads stay in the ring.
        var readBack = try AlignedBuffer(byteCount: 1 << 20)
        #expect(try file.read(into: &readBack, at: 0) == 1 << 20)
        #expect(readBack.bytes() == model)
        var small = [UInt8](repeating: 0, count: 4000)
        #expect(try file.read(into: &small, at: 300_001) == 4000)
        #expect(small == third)
        #expect(calls() == (ring ? expected : 0))
        #expect(try TestSupport.referenceRead(path, count: model.count) == model)
    }

    @Test(arguments: engines)
    func vectoredWriteAndReadMatchReference(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let engine = try config.make()
        let file = try DirectFile(path: path, options: OpenOptions(create: true), engine: engine)
        let sizes = [4096, 12288, 512, 1024]
        let one = try AlignedBuffer(byteCount: 32768)
        var offsetInBuffer = 0
        var pieces: [UnsafeRawBufferPointer] = []
        var expected: [UInt8] = []
        for (index, size) in sizes.enumerated() {
            let bytes = TestSupport.pattern(count: size, seed: UInt64(20 + index))
            (one.baseAddress + offsetInBuffer).copyMemory(from: bytes, byteCount: size)
            pieces.append(UnsafeRawBufferPointer(start: one.baseAddress + offsetInBuffer, count: size))
            expected += bytes
            offsetInBuffer += (size + 4095) / 4096 * 4096
        }
        let result6 = try file.write(pieces, at: 4096)
        #expect(result6 == expected.count)
        #expect(try TestSupport.referenceRead(path, count: expected.count, at: 4096) == expected)

        let target = try AlignedBuffer(byteCount: 65536)
        let halves = [UnsafeMutableRawBufferPointer(start: target.baseAddress, count: 8192),
                      UnsafeMutableRawBufferPointer(start: target.baseAddress + 16384, count: expected.count - 8192)]
        let result7 = try file.read(into: halves, at: 4096)
        #expect(result7 == expected.count)
        let got = Array(UnsafeRawBufferPointer(halves[0])) + Array(UnsafeRawBufferPointer(halves[1]))
        #expect(got == expected)
    }

    @Test(arguments: engines)
    func readsAtAndPastEndOfFileAreShortCounts(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let reference = TestSupport.pattern(count: 10000, seed: 5)
        try TestSupport.referenceWrite(path, reference)
        let engine = try config.make()
        let file = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: engine)
        var buffer = try AlignedBuffer(byteCount: 16384)
        let result8 = try file.read(into: &buffer, at: 0)
        #expect(result8 == 10000)
        #expect(buffer.bytes(count: 10000) == reference)
        let result9 = try file.read(into: &buffer, count: 4096, at: 8192)
        #expect(result9 == 1808)
        #expect(buffer.bytes(count: 1808) == Array(reference[8192...]))
        let result10 = try file.read(into: &buffer, at: 16384)
        #expect(result10 == 0)
        let result11 = try file.read(into: &buffer, at: 1 << 40)
        #expect(result11 == 0)
    }

    @Test(arguments: engines)
    func syncPreallocateAndSize(config: EngineConfig) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let engine = try config.make()
        let file = try DirectFile(path: path, options: OpenOptions(create: true, exclusive: true), engine: engine)
        let result12 = try file.size()
        #expect(result12 == 0)
        try file.preallocate(offset: 0, length: 1 << 20, keepSize: true)
        let result13 = try file.size()
        #expect(result13 == 0)
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_blocks * 512 >= 1 << 20)
        try file.preallocate(offset: 0, length: 2 << 20)
        let result14 = try file.size()
        #expect(result14 == 2 << 20)
        try file.sync(dataOnly: true)
        try file.sync()
        #expect(try TestSupport.referenceRead(path, count: 4096) == [UInt8](repeating: 0, count: 4096))
    }

    @Test(arguments: [IOEngine.Choice.ioUring, .blocking])
    func automaticHonoursTheEnvironmentOverride(choice: IOEngine.Choice) throws {
        // The override is read when an engine is made; a child process keeps this test from
        // changing the environment of the tests running beside it.
        let name = choice == .blocking ? "blocking" : "io_uring"
        let result = try TestSupport.run([TestSupport.dioExecutable, "inspect", "--json", "/tmp"], environment: ["DIRECTIO_ENGINE": name])
        #expect(result.status == 0, "\(result.error)")
        let json = try TestSupport.json(result.output)
        if choice == .ioUring && json["engine"] as? String == "none" {
            let notes = (json["engineNotes"] as? [String]) ?? []
            try TestSupport.skipIfMemlockRefused(DirectIOError(.outOfMemory, operation: "create io_uring", detail: notes.joined(separator: "; ")), "a forced io_uring engine")
        }
        #expect(json["engine"] as? String == name)
    }
}

/// An engine configuration the shared suite runs on.
struct EngineConfig: Sendable, CustomTestStringConvertible {
    let choice: IOEngine.Choice
    let flags: RingSetupFlags

    func make(queueDepth: Int = 64) throws -> IOEngine {
        try TestSupport.skippingIfMemlockRefuses { try IOEngine(choice, queueDepth: queueDepth, ringFlags: flags) }
    }

    var testDescription: String { choice == .blocking ? "blocking" : "io_uring \(flags)" }
}


@Suite struct SingleIssuerTests {
    @Test func aThreadPerCoreEngineRefusesOtherThreadsWithATypedError() throws {
        let engine = try TestSupport.ringEngine(queueDepth: 4, ringFlags: .threadPerCore)
        #expect(engine.ringFlags?.contains(.singleIssuer) == true)
        try engine.flush()
        // Another thread must get DirectIO's error, before the kernel's EEXIST could arise.
        let box = UncheckedBox(engine)
        let outcome = Mutex<String?>(nil)
        let thread = Thread {
            do throws(DirectIOError) {
                try box.value.flush()
                outcome.withLock { $0 = "no error" }
            } catch {
                let detail = error.detail ?? ""
                outcome.withLock { $0 = detail }
            }
        }
        thread.start()
        while thread.isExecuting || !thread.isFinished { usleep(1000) }
        #expect(outcome.withLock { $0 }?.contains("SINGLE_ISSUER") == true)
    }
}

/// Moves a non-Sendable engine to another thread for the single-issuer test only: the test
/// thread does not touch it while the other thread runs (it waits for that thread to finish).
final class UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
