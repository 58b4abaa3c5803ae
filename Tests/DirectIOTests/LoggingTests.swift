import Foundation
import Glibc
import Logging
import Testing
@testable import DirectIO

/// What DirectIO says through swift-log: limitations and fallbacks at info, with `directio.*`
/// metadata, once where they happen, never per I/O.
@Suite struct LoggingTests {
    @Test func anUnregisteredPoolIsSaidAtInfoOnceAndIOIsNotLogged() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let logs = CapturedLogs()
        // No fixed-buffer table: every pool is refused.
        let engine = try IOEngine(fixedBufferSlots: 0, logger: logs.logger())
        let pool = try BufferPool(count: 3, bufferBytes: 12288)
        #expect(!engine.register(pool))
        // (The engine's own bounce pools were refused too, and said so when it was made.)
        let said = logs.matching("buffer pool not registered").filter { $0.metadata["directio.pool.buffer_bytes"] == "12288" }
        #expect(said.count == 1 && said.first?.level == .info, "\(said)")
        #expect(said.first?.metadata["directio.pool.buffers"] == "3" && said.first?.metadata["directio.reason"]?.isEmpty == false)
        // I/O logs nothing.
        let before = logs.entries.withLock { $0.count }
        let file = try DirectFile(path: directory + "/data", options: OpenOptions(create: true), engine: engine)
        for index in 0..<50 { _ = try file.write(TestSupport.pattern(count: 1000, seed: UInt64(index)), at: Int64(index * 777)) }
        #expect(logs.entries.withLock { $0.count } == before)
    }

    @Test func eachRingSaysItsOwnAndTheRuntimeNamesIt() async throws {
        let logs = CapturedLogs()
        let runtime = try IORuntime(rings: 2, queueDepth: 8, engine: .blocking, logger: logs.logger())
        let pool = try BufferPool(count: 1, bufferBytes: 4096)
        await runtime.register(pool)
        let said = logs.matching("buffer pool not registered")
        #expect(Set(said.compactMap { $0.metadata["directio.ring"] }) == ["0", "1"], "\(said.map(\.metadata))")
        await runtime.shutdown()
    }

    @Test func aTransferSaysWhichPathsItTookAtDebug() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let bytes = TestSupport.pattern(count: 300_000, seed: 5)
        try TestSupport.referenceWrite(directory + "/from", bytes)
        let logs = CapturedLogs()
        let report = try Transfer.copyFile(from: directory + "/from", to: directory + "/to", options: TransferOptions(logger: logs.logger()))
        #expect(try TestSupport.referenceRead(directory + "/to", count: 300_000) == bytes)
        let said = logs.matching("transfer done")
        #expect(said.count == 1 && said.first?.level == .debug, "\(said)")
        #expect(said.first?.metadata["directio.bytes"] == "300000")
        #expect(said.first?.metadata["directio.strategies"] == report.strategiesUsed.map { "\($0)" }.joined(separator: ","))
    }
}
