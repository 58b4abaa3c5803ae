import Testing
import DirectIO
import DirectIOTesting
import DirectIOLog

/// The README's examples, run as written (on a scratch file instead of /data/table.db), so
/// the first code a user copies compiles and does what it says.
@Suite struct ReadmeExampleTests {
    @Test func theShortExampleRunsAsWritten() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/table.db"

        let engine = try IOEngine()
        let pool = try BufferPool(count: 32, bufferBytes: 64 * 1024)
        engine.register(pool)

        let file = try DirectFile(path: path, options: OpenOptions(directIO: .required, create: true), engine: engine)
        #expect(file.limits.memoryAlignment > 0 && file.limits.offsetAlignment > 0)

        guard var buffer = pool.take() else { Issue.record("pool empty"); return }
        buffer.copy(from: Array(repeating: 0xAB, count: buffer.count))
        _ = try file.write(buffer, at: 0)
        try file.sync(dataOnly: true)
        let n = try file.read(into: &buffer, at: 0)
        #expect(n == 65536 && buffer.bytes() == [UInt8](repeating: 0xAB, count: 65536))

        for block in 0..<8 {
            guard let next = pool.take() else { Issue.record("pool empty"); return }
            try file.submitRead(into: next, at: Int64(block) * 65536, tag: UInt64(block))
        }
        var outcomes: [UInt64: Int] = [:]
        try engine.reap(minimum: 8) { completion in
            var completion = completion
            outcomes[completion.tag] = completion.outcome.bytes
            _ = completion.takeBuffer()
        }
        // Only block 0 exists; the others are past the end of the file: 0 bytes, no error.
        #expect(outcomes == [0: 65536, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0])

        var header = [UInt8](repeating: 0, count: 100)
        #expect(try file.read(into: &header, at: 12) == 100)
        #expect(header == [UInt8](repeating: 0xAB, count: 100))
        #expect(try file.write(Array("hello".utf8), at: 4097) == 5)
        #expect(try TestSupport.referenceRead(path, count: 5, at: 4097) == Array("hello".utf8))
        #expect(file.statistics.bytesBounced > 0)
    }

    @Test func theAsyncExampleRunsAsWritten() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/table.db"

        let runtime = try IORuntime(rings: 2)
        let pool = try BufferPool(count: 64, bufferBytes: 64 * 1024)
        await runtime.register(pool)
        let file = try AsyncFile(path: path, options: OpenOptions(directIO: .required, create: true), runtime: runtime)
        #expect(file.limits.memoryAlignment > 0 && file.limits.offsetAlignment > 0)

        guard var buffer = pool.take() else { Issue.record("pool empty"); return }
        buffer.copy(from: Array(repeating: 0xAB, count: buffer.count))
        _ = try await file.write(buffer, at: 0)
        try await file.sync(dataOnly: true)
        let n = try await file.read(into: &buffer, at: 0)
        #expect(n == 65536 && buffer.bytes() == [UInt8](repeating: 0xAB, count: 65536))
        let header = try await file.read(count: 100, at: 12)
        #expect(header == [UInt8](repeating: 0xAB, count: 100))

        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for block in 0..<1000 {
                group.addTask {
                    var mine = try AlignedBuffer(byteCount: 65536)
                    return try await file.read(into: &mine, at: Int64(block % 64) * 65536)
                }
            }
            var total = 0
            for try await count in group { total += count }
            return total
        }
        // Only block 0 holds data: 1000 / 64 rounded up of the reads find it.
        #expect(total == 16 * 65536)

        let executorRead = await withTaskExecutorPreference(runtime.executor(ring: 0)) {
            try? await file.read(into: &buffer, at: 0)
        }
        #expect(executorRead == 65536)

        let scopedTotal = try await runtime.withIOScope { scope in
            var total = 0
            for block in 0..<64 {
                total += try await file.read(into: &buffer, at: Int64(block) * 65536, in: scope)
            }
            return total
        }
        #expect(scopedTotal == 65536 && buffer.bytes() == [UInt8](repeating: 0xAB, count: 65536))
        await runtime.shutdown()
    }

    @Test func thePowerCutExampleRunsAsWritten() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/log"
        try TestSupport.referenceWrite(path, [])
        let record = [UInt8](repeating: 1, count: 4096), nextRecord = [UInt8](repeating: 2, count: 8192)

        let device = MemoryDevice(writeCache: .init(logicalBlockSize: 4096))
        let file = try DirectFile(path: path, options: OpenOptions(access: .readWrite), engine: .inMemory(device))
        _ = try file.write(record, at: 0)
        try file.sync(dataOnly: true)            // durable
        _ = try file.write(nextRecord, at: 4096) // not yet
        device.powerCut(seed: 42)                // record survives; nextRecord whole, gone or torn

        let survived = try #require(device.contents(ofFileAt: path))
        #expect(Array(survived.prefix(4096)) == record)
        // Of the undurable write, each block is there or not (a lost block before a kept one
        // reads as zeros, as a hole does).
        for block in stride(from: 4096, to: survived.count, by: 4096) {
            let bytes = Array(survived[block..<block + 4096])
            #expect(bytes == [UInt8](repeating: 2, count: 4096) || bytes == [UInt8](repeating: 0, count: 4096))
        }
    }

    @Test func theLogExampleRunsAsWritten() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let record1: [UInt8] = [1], record2: [UInt8] = [2, 2]
        var replayed: [(Int64, [UInt8])] = []
        func replay(_ position: Int64, _ payload: [UInt8]) { replayed.append((position, payload)) }

        let log = try DurableLog(path: directory + "/wal")        // recovers the valid end on open
        let position = try log.append(Array("commit 42".utf8))    // returns once durable
        let many = try log.append(contentsOf: [record1, record2])  // one wait for many
        for (position, payload) in try log.records() { replay(position, payload) }

        #expect(replayed.map(\.0) == [position] + many)
        #expect(replayed.map(\.1) == [Array("commit 42".utf8), record1, record2])
    }

    @Test func theAsyncLogExampleRunsAsWritten() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let log = try DurableLog(path: directory + "/wal")
        let committed = try await log.append(Array("commit 43".utf8))
        #expect(try log.read(at: committed) == Array("commit 43".utf8))
        #expect(try DurableLog(path: directory + "/wal").records().map(\.payload) == [Array("commit 43".utf8)])
    }
}
