import Foundation
import Glibc
import Testing
@testable import DirectIO

/// `IOScope`: one cancellation handler for many calls must cancel exactly as a handler per
/// call does. Bytes are compared with pread; a FIFO read that never completes makes
/// cancellation of an in-flight request deterministic.
@Suite struct IOScopeTests {
    /// A FIFO opened for reading and writing (no open blocks), as an async file, with its
    /// write end for the test to feed.
    private func fifo(_ directory: String, runtime: IORuntime) throws -> (AsyncFile, Int32) {
        let path = directory + "/fifo"
        try #require(mkfifo(path, 0o600) == 0)
        let file = try AsyncFile(path: path, options: OpenOptions(directIO: .disabled), runtime: runtime)
        let writer = open(path, O_WRONLY | O_NONBLOCK)
        try #require(writer >= 0)
        return (file, writer)
    }

    /// Polls rather than blocks: a blocked thread of Swift's small cooperative pool could be the
    /// one the awaited task needs.
    private func waitUntil(_ flag: ConditionLock<Bool>) async throws {
        while !flag.withLock({ $0 }) { try await Task.sleep(nanoseconds: 1_000_000) }
    }

    @Test(arguments: [false, true])
    func scopedCallsReadAndWriteByteExact(onRingExecutor: Bool) async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: 1024 * 4096, seed: 11)
        try TestSupport.referenceWrite(path, bytes)
        let runtime = try IORuntime(rings: 2, queueDepth: 32)
        let file = try AsyncFile(path: path, runtime: runtime)
        let pool = try BufferPool(count: 64, bufferBytes: 4096)
        await runtime.register(pool)
        let executor: (any TaskExecutor)? = onRingExecutor ? runtime.executor(ring: 1) : nil
        // 64 tasks, each with one scope for all its calls: reads, then a write of its own
        // block and a data sync, then reads that must see the write.
        let failures = await withTaskGroup(of: String?.self) { group in
            for task in 0..<64 {
                group.addTask(executorPreference: executor) {
                    do {
                        return try await runtime.withIOScope { scope -> String? in
                            guard var buffer = pool.take() else { return "pool empty" }
                            for step in 0..<40 {
                                // Blocks 960 and up are the ones the tasks rewrite below: not read here.
                                let block = (task * 7919 + step * 104_729) % 960
                                guard try await file.read(into: &buffer, at: Int64(block * 4096), in: scope) == 4096,
                                      buffer.bytes() == Array(bytes[block * 4096..<(block + 1) * 4096]) else { return "block \(block) differs" }
                            }
                            let mine = 1024 - 1 - task
                            let written = TestSupport.pattern(count: 4096, seed: UInt64(task) + 500)
                            _ = buffer.copy(from: written)
                            guard try await file.write(buffer, at: Int64(mine * 4096), in: scope) == 4096 else { return "short write" }
                            try await file.sync(dataOnly: true, in: scope)
                            guard try await file.read(count: 100, at: Int64(mine * 4096) + 7, in: scope) == Array(written[7..<107]) else { return "write not read back" }
                            return nil
                        }
                    } catch {
                        return "\(error)"
                    }
                }
            }
            var failures: [String] = []
            for await failure in group { if let failure { failures.append(failure) } }
            return failures
        }
        #expect(failures.isEmpty, "\(failures.prefix(3))")
        #expect(pool.available == 64)
        for task in stride(from: 0, to: 64, by: 9) {
            #expect(try TestSupport.referenceRead(path, count: 4096, at: Int64((1023 - task) * 4096)) == TestSupport.pattern(count: 4096, seed: UInt64(task) + 500))
        }
        await runtime.shutdown()
    }

    /// Cancelling the task cancels the scoped read it awaits (it never completes otherwise),
    /// the read consumes nothing, and later calls in the scope throw without reaching the kernel.
    @Test(.timeLimit(.minutes(1)))
    func cancellingTheTaskCancelsTheScopedReadItAwaits() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let runtime = try IORuntime(rings: 1, queueDepth: 8)
        try TestSupport.requireRings(runtime, for: "a read left in the kernel")
        let (pipe, writer) = try fifo(directory, runtime: runtime)
        defer { close(writer) }
        let started = ConditionLock(false)
        let reader = Task { () -> [String] in
            await runtime.withIOScope { scope in
                var outcomes: [String] = []
                let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 4096)
                defer { memory.deallocate() }
                for _ in 0..<2 {
                    started.updateAndBroadcast { $0 = true }
                    do {
                        let count = try await pipe.read(into: memory, at: 0, in: scope)
                        outcomes.append("read \(count)")
                    } catch is CancellationError {
                        outcomes.append("cancelled")
                    } catch {
                        outcomes.append("\(error)")
                    }
                }
                return outcomes
            }
        }
        try await waitUntil(started)
        try await Task.sleep(nanoseconds: 20_000_000)
        reader.cancel()
        #expect(await reader.value == ["cancelled", "cancelled"])
        // Nothing was consumed: bytes written now are all still in the FIFO.
        let message = Array("still here".utf8)
        #expect(write(writer, message, message.count) == message.count)
        #expect(try await pipe.read(count: message.count, at: 0) == message)
        await runtime.shutdown()
    }

    /// Half of 1,000 tasks, each looping over scoped reads, are cancelled at random moments:
    /// every task ends, every completed read is byte-exact (no buffer was written by another
    /// task's cancelled read), and every buffer is back in the pool.
    @Test(arguments: [IOEngine.Choice.automatic, .blocking])
    func cancellationStormInScopesLosesNoCompletion(engine: IOEngine.Choice) async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: 4096 * 4096, seed: 12)
        try TestSupport.referenceWrite(path, bytes)
        let runtime = try IORuntime(rings: 2, queueDepth: 64, engine: engine)
        let file = try AsyncFile(path: path, runtime: runtime)
        let pool = try BufferPool(count: 1000, bufferBytes: 4096, hugePages: .none)
        await runtime.register(pool)
        enum Outcome: Sendable { case finished, cancelled(afterReads: Int), wrong(String) }
        let executors = [nil, runtime.executor(ring: 0), runtime.executor(ring: 1)]
        var tasks: [Task<Outcome, Never>] = []
        for index in 0..<1000 {
            tasks.append(Task(executorPreference: executors[index % 3]) {
                guard var buffer = pool.take() else { return .wrong("pool empty") }
                var reads = 0
                do {
                    return try await runtime.withIOScope { scope in
                        for step in 0..<20 {
                            let block = (index * 104_729 + step * 7919) % 4096
                            let count = try await file.read(into: &buffer, at: Int64(block * 4096), in: scope)
                            guard count == 4096, buffer.bytes() == Array(bytes[block * 4096..<(block + 1) * 4096]) else { return .wrong("block \(block) differs") }
                            reads += 1
                        }
                        return .finished
                    }
                } catch is CancellationError {
                    return .cancelled(afterReads: reads)
                } catch {
                    return .wrong("\(error)")
                }
            })
        }
        var random = SystemRandomNumberGenerator()
        for index in Array(0..<1000).shuffled(using: &random).prefix(500) {
            tasks[index].cancel()
            if Int.random(in: 0..<20, using: &random) == 0 { try await Task.sleep(nanoseconds: 50_000) }
        }
        var finished = 0, cancelled = 0
        for task in tasks {
            switch await task.value {
            case .finished: finished += 1
            case .cancelled(let reads):
                cancelled += 1
                #expect(reads < 20)
            case .wrong(let why): Issue.record("\(why)")
            }
        }
        #expect(finished + cancelled == 1000)
        #expect(finished >= 500)
        #expect(cancelled > 0, "no cancellation took effect")
        #expect(pool.available == 1000, "buffers leaked")
        await runtime.shutdown()
    }

    /// A scope kept past its `withIOScope`, or passed with a file of another runtime, no longer
    /// has a handler watching for it: calls fall back to a handler of their own, and
    /// cancellation still reaches the kernel.
    @Test(.timeLimit(.minutes(1)))
    func aScopeOutsideItsBodyFallsBackToPerCallHandlers() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let runtime = try IORuntime(rings: 1, queueDepth: 8)
        let other = try IORuntime(rings: 1, queueDepth: 8)
        try TestSupport.requireRings(runtime, for: "a read left in the kernel")
        let (pipe, writer) = try fifo(directory, runtime: runtime)
        defer { close(writer) }
        for escaped in [true, false] {
            let started = ConditionLock(false)
            let reader = Task { () -> String in
                let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 4096)
                defer { memory.deallocate() }
                let read = { (scope: IOScope) async throws -> Int in
                    started.updateAndBroadcast { $0 = true }
                    return try await pipe.read(into: memory, at: 0, in: scope)
                }
                do {
                    if escaped {
                        let kept = await runtime.withIOScope { $0 }
                        _ = try await read(kept)
                    } else {
                        _ = try await other.withIOScope { scope in try await read(scope) }
                    }
                    return "read"
                } catch is CancellationError {
                    return "cancelled"
                } catch {
                    return "\(error)"
                }
            }
            try await waitUntil(started)
            try await Task.sleep(nanoseconds: 20_000_000)
            reader.cancel()
            #expect(await reader.value == "cancelled", "escaped: \(escaped)")
        }
        await runtime.shutdown()
        await other.shutdown()
    }

    /// An actor runs a scope in its own methods: the body keeps the actor's isolation.
    @Test func anActorRunsAScopeInItsOwnMethods() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: 16 * 4096, seed: 13)
        try TestSupport.referenceWrite(path, bytes)
        let runtime = try IORuntime(rings: 1, queueDepth: 8)
        let reader = ScopedReader(file: try AsyncFile(path: path, runtime: runtime))
        try await reader.read(blocks: [5, 0, 15, 5])
        #expect(await reader.blocks == [5, 0, 15, 5].map { Array(bytes[$0 * 4096..<($0 + 1) * 4096]) })
        await runtime.shutdown()
    }

    private actor ScopedReader {
        let file: AsyncFile
        var blocks: [[UInt8]] = []

        init(file: AsyncFile) { self.file = file }

        func read(blocks wanted: [Int]) async throws {
            try await file.runtime.withIOScope { scope in
                for block in wanted {
                    let data = try await file.read(count: 4096, at: Int64(block * 4096), in: scope)
                    assertIsolated()
                    blocks.append(data)
                }
            }
        }
    }
}
