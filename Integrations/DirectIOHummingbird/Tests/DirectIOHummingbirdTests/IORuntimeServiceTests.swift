import DirectIO
import Foundation
import Glibc
import Logging
import ServiceLifecycle
import Synchronization
import Testing
@testable import DirectIOServiceLifecycle

/// The runtime as a service: a graceful shutdown lets the I/O in flight finish (nothing lost),
/// cancellation cancels it, and I/O after either fails with `.cancelled`.
@Suite(.serialized) struct IORuntimeServiceTests {
    /// Writes 64 KiB blocks with 16 tasks until its graceful shutdown (never cancelling a write
    /// in flight) or until the runtime refuses; records what each write returned.
    struct Writer: Service {
        let file: AsyncFile
        let acknowledged = Outcomes()

        final class Outcomes: Sendable {
            let blocks = Mutex<[Int64: UInt8]>([:])
            let refusals = Mutex<Int>(0)
            /// Tasks that saw the writer's own shutdown before their next write was refused (a
            /// write that finished during the runtime's drain, just before `stop` was set).
            let stoppedFirst = Mutex<Int>(0)
            let otherErrors = Mutex<[String]>([])
            let stop = Atomic<Bool>(false)
        }

        func run() async throws {
            await withTaskGroup(of: Void.self) { group in
                for task in 0..<16 {
                    group.addTask {
                        var round = 0
                        while !acknowledged.stop.load(ordering: .relaxed) {
                            // Each task has its own 128 blocks: a block's last acknowledged write is its last.
                            let offset = Int64(task * 128 + round % 128) * 65536
                            let fill = UInt8(truncatingIfNeeded: task * 31 + round + 1)
                            do {
                                _ = try await file.write([UInt8](repeating: fill, count: 65536), at: offset)
                                acknowledged.blocks.withLock { $0[offset] = fill }
                            } catch let error as DirectIOError where error.code == .cancelled {
                                acknowledged.refusals.withLock { $0 += 1 }
                                return
                            } catch {
                                acknowledged.otherErrors.withLock { $0.append("\(error)") }
                                return
                            }
                            round += 1
                        }
                        acknowledged.stoppedFirst.withLock { $0 += 1 }
                    }
                }
                try? await gracefulShutdown()
                acknowledged.stop.store(true, ordering: .relaxed)
            }
        }
    }

    static func scratchFile() throws -> String {
        let path = "/var/tmp/directio-service-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(path, O_CREAT | O_RDWR, 0o600)
        guard fd >= 0, ftruncate(fd, 2048 * 65536) == 0 else { throw CocoaError(.fileWriteUnknown) }
        close(fd)
        return path
    }

    /// The runtime listed after the writer, so it shuts down first, with 16 writes in flight:
    /// those finish and are on disk; later ones are refused with `.cancelled`; nothing else
    /// fails, nothing acknowledged is missing.
    @Test func gracefulShutdownWithIOInFlightLosesNothing() async throws {
        let path = try Self.scratchFile()
        defer { unlink(path) }
        let runtime = try IORuntime(rings: 2, queueDepth: 16)
        let writer = Writer(file: try AsyncFile(path: path, options: OpenOptions(access: .readWrite), runtime: runtime))
        let group = ServiceGroup(services: [writer, IORuntimeService(runtime)], logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await Task.sleep(for: .milliseconds(300))
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        let outcomes = writer.acknowledged
        let acknowledged = outcomes.blocks.withLock { $0 }
        #expect(acknowledged.count > 50, "only \(acknowledged.count) writes before the shutdown")
        // Every task ended, almost all refused by the stopped runtime (a task whose last write
        // finished in the drain may see the writer's own stop first).
        let refused = outcomes.refusals.withLock { $0 }
        #expect(refused + outcomes.stoppedFirst.withLock { $0 } == 16 && refused > 0, "\(refused) refused of 16 writer tasks")
        #expect(outcomes.otherErrors.withLock { $0 }.isEmpty, "\(outcomes.otherErrors.withLock { $0 })")
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var block = [UInt8](repeating: 0, count: 65536)
        for (offset, fill) in acknowledged {
            #expect(pread(fd, &block, 65536, off_t(offset)) == 65536)
            #expect(block.allSatisfy { $0 == fill }, "the block at \(offset) is not the last acknowledged write")
        }
    }

    @Test func cancellationCancelsTheRuntime() async throws {
        let path = try Self.scratchFile()
        defer { unlink(path) }
        let runtime = try IORuntime(rings: 1, queueDepth: 16)
        let file = try AsyncFile(path: path, options: OpenOptions(access: .readWrite), runtime: runtime)
        let service = IORuntimeService(runtime)
        let running = Task { try await service.run() }
        try await Task.sleep(for: .milliseconds(50))
        running.cancel()
        await #expect(throws: CancellationError.self) { try await running.value }
        do {
            _ = try await file.write([UInt8](repeating: 7, count: 4096), at: 0)
            Issue.record("a write after the runtime was cancelled succeeded")
        } catch let error as DirectIOError {
            #expect(error.code == .cancelled, "\(error)")
        }
    }
}
