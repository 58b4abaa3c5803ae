import Foundation
import Glibc
import Testing
@testable import DirectIO

/// The async API: many tasks, the ring's own executor, cancellation storms, backpressure and
/// shutdown. Every byte is compared with pread on a plain descriptor.
@Suite struct AsyncTests {
    static let engines: [IOEngine.Choice] = [.automatic, .blocking]

    /// A file of `blocks` 4 KiB blocks of pattern data; returns its path and bytes.
    private func makeFile(_ directory: String, blocks: Int, seed: UInt64) throws -> (String, [UInt8]) {
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: blocks * 4096, seed: seed)
        try TestSupport.referenceWrite(path, bytes)
        return (path, bytes)
    }

    @Test(arguments: engines)
    func thousandsOfTasksReadAndWriteByteExact(engine: IOEngine.Choice) async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let (path, bytes) = try makeFile(directory, blocks: 2048, seed: 1)
        let runtime = try IORuntime(rings: 2, queueDepth: 64, engine: engine)
        // Where RLIMIT_MEMLOCK refuses the rings, .automatic falls back to blocking: the rest of
        // the test is then that fallback's byte-exact check.
        #expect(runtime.usesIOUring == (engine == .automatic) || (TestSupport.memlockBinds && !runtime.usesIOUring))
        let file = try AsyncFile(path: path, runtime: runtime)
        let pool = try BufferPool(count: 1200, bufferBytes: 4096)
        await runtime.register(pool)
        // 1,200 reads in flight at once across tasks: 128 in the kernel, the rest waiting in order.
        let failures = await withTaskGroup(of: String?.self) { group in
            for index in 0..<1200 {
                group.addTask {
                    guard var buffer = pool.take() else { return "pool empty" }
                    let block = (index * 7919) % 2048
                    do {
                        let count = try await file.read(into: &buffer, at: Int64(block * 4096))
                        guard count == 4096, buffer.bytes() == Array(bytes[block * 4096..<(block + 1) * 4096]) else { return "block \(block) differs" }
                    } catch { return "\(error)" }
                    return nil
                }
            }
            var failures: [String] = []
            for await failure in group { if let failure { failures.append(failure) } }
            return failures
        }
        #expect(failures.isEmpty, "\(failures.prefix(3))")
        #expect(pool.available == 1200)

        // Writes from many tasks, then a sync: pread sees every one.
        let written = await withTaskGroup(of: Bool.self) { group in
            for block in 0..<256 {
                group.addTask {
                    guard var buffer = pool.take() else { return false }
                    _ = buffer.copy(from: TestSupport.pattern(count: 4096, seed: UInt64(block) + 100))
                    return (try? await file.write(buffer, at: Int64(block * 4096))) == 4096
                }
            }
            return await group.allSatisfy { $0 }
        }
        #expect(written)
        try await file.sync(dataOnly: true)
        for block in stride(from: 0, to: 256, by: 37) {
            #expect(try TestSupport.referenceRead(path, count: 4096, at: Int64(block * 4096)) == TestSupport.pattern(count: 4096, seed: UInt64(block) + 100))
        }
        await runtime.shutdown()
    }

    @Test func tasksOnTheRingsExecutorRunOnItsThreadAndSubmitDirectly() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let (path, bytes) = try makeFile(directory, blocks: 256, seed: 2)
        let runtime = try IORuntime(rings: 2, queueDepth: 32)
        let file = try AsyncFile(path: path, runtime: runtime)
        let executor = runtime.executor(ring: 1)
        let results = await withTaskGroup(of: (Bool, Bool).self) { group in
            for block in 0..<64 {
                group.addTask(executorPreference: executor) {
                    let onRing = runtime.workers[1].isCurrent
                    let data = try? await file.read(count: 4096, at: Int64(block * 4096))
                    let stillOnRing = runtime.workers[1].isCurrent
                    return (onRing && stillOnRing, data == Array(bytes[block * 4096..<(block + 1) * 4096]))
                }
            }
            var all: [(Bool, Bool)] = []
            for await result in group { all.append(result) }
            return all
        }
        #expect(results.allSatisfy { $0.0 }, "tasks left the ring's thread")
        #expect(results.allSatisfy { $0.1 }, "wrong bytes")
        await runtime.shutdown()
    }

    /// An executor handed out by a runtime keeps working after the runtime is gone: its jobs
    /// run on the global pool once the ring's thread has exited (they are not dropped, which
    /// would leave the task suspended forever).
    @Test(.timeLimit(.minutes(1)))
    func anExecutorOutlivingItsRuntimeStillRunsItsTasks() async throws {
        var runtime: IORuntime? = try IORuntime(rings: 1, queueDepth: 8)
        let executor = try #require(runtime).executor(ring: 0)
        await runtime?.shutdown()
        runtime = nil
        let value = await withTaskExecutorPreference(executor) {
            await Task.yield()
            return 42
        }
        #expect(value == 42)
    }

    /// Rings keep each file's descriptor in their fixed-file tables. Files closed and opened
    /// again get the same descriptor numbers; every read must still reach its own file, from
    /// both the home ring and a ring's own executor (a stale slot would read the old file).
    @Test func reusedDescriptorNumbersReachTheirOwnFiles() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let runtime = try IORuntime(rings: 2, queueDepth: 16)
        var numbers: Set<Int32> = []
        for round in 0..<12 {
            let path = directory + "/file\(round)"
            let bytes = TestSupport.pattern(count: 8 * 4096, seed: UInt64(round) + 40)
            try TestSupport.referenceWrite(path, bytes)
            let file = try AsyncFile(path: path, runtime: runtime)
            numbers.insert(file.descriptor)
            let fromHome = try await file.read(count: 4096, at: 4096)
            let fromRing = await withTaskExecutorPreference(runtime.executor(ring: round % 2)) {
                try? await file.read(count: 4096, at: 3 * 4096)
            }
            let homeMatches = fromHome == Array(bytes[4096..<8192])
            let ringMatches = fromRing == Array(bytes[3 * 4096..<4 * 4096])
            #expect(homeMatches, "round \(round): the home ring read another file")
            #expect(ringMatches, "round \(round): ring \(round % 2) read another file")
        }
        // The point of the test: numbers were reused (each file closed before the next opened).
        #expect(numbers.count < 12)
        await runtime.shutdown()
    }

    /// AsyncFile's calls run on the caller's executor: an actor awaits reads in its own methods
    /// and is still isolated when each returns.
    @Test func anActorAwaitsReadsInItsOwnMethods() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let (path, bytes) = try makeFile(directory, blocks: 16, seed: 4)
        let runtime = try IORuntime(rings: 1, queueDepth: 8)
        let file = try AsyncFile(path: path, runtime: runtime)
        let reader = BlockReader(file: file)
        for block in [3, 0, 15] { try await reader.read(block: block) }
        let blocks = await reader.blocks
        #expect(blocks == [3, 0, 15].map { Array(bytes[$0 * 4096..<($0 + 1) * 4096]) })
        await runtime.shutdown()
    }

    private actor BlockReader {
        let file: AsyncFile
        var blocks: [[UInt8]] = []

        init(file: AsyncFile) { self.file = file }

        func read(block: Int) async throws {
            var buffer = try AlignedBuffer(byteCount: 4096)
            let count = try await file.read(into: &buffer, at: Int64(block * 4096))
            assertIsolated()
            blocks.append(buffer.withUnsafeBytes { Array($0.prefix(count)) })
        }
    }

    @Test(arguments: engines)
    func cancellationStormLosesNoCompletionAndLeaksNoBuffer(engine: IOEngine.Choice) async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let (path, bytes) = try makeFile(directory, blocks: 4096, seed: 3)
        let runtime = try IORuntime(rings: 2, queueDepth: 128, engine: engine)
        let file = try AsyncFile(path: path, runtime: runtime)
        let pool = try BufferPool(count: 10_000, bufferBytes: 4096, hugePages: .none)
        await runtime.register(pool)
        enum Result: Sendable { case read, cancelled, wrong(String) }
        var tasks: [Task<Result, Never>] = []
        for index in 0..<10_000 {
            tasks.append(Task {
                guard var buffer = pool.take() else { return .wrong("pool empty") }
                let block = (index * 104_729) % 4096
                do {
                    let count = try await file.read(into: &buffer, at: Int64(block * 4096))
                    // A buffer another task's cancelled read had used must hold only this read's bytes.
                    return count == 4096 && buffer.bytes() == Array(bytes[block * 4096..<(block + 1) * 4096]) ? .read : .wrong("block \(block) differs")
                } catch is CancellationError {
                    return .cancelled
                } catch {
                    return .wrong("\(error)")
                }
            })
        }
        // Cancel half of them, at random moments while the rest run.
        var random = SystemRandomNumberGenerator()
        for index in Array(0..<10_000).shuffled(using: &random).prefix(5_000) {
            tasks[index].cancel()
            if Int.random(in: 0..<50, using: &random) == 0 { try await Task.sleep(nanoseconds: 50_000) }
        }
        var counts = (read: 0, cancelled: 0)
        for task in tasks {
            switch await task.value {
            case .read: counts.read += 1
            case .cancelled: counts.cancelled += 1
            case .wrong(let why): Issue.record("\(why)")
            }
        }
        #expect(counts.read + counts.cancelled == 10_000)
        #expect(counts.read >= 5_000)
        #expect(counts.cancelled > 0, "no cancellation took effect")
        #expect(pool.available == 10_000, "buffers leaked")
        await runtime.shutdown()
    }

    @Test func shutdownWithIOInFlightFinishesOrCancelsEveryRequest() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let (path, bytes) = try makeFile(directory, blocks: 1024, seed: 4)
        for cancelling in [false, true] {
            let runtime = try IORuntime(rings: 2, queueDepth: 16)
            let file = try AsyncFile(path: path, runtime: runtime)
            let pool = try BufferPool(count: 500, bufferBytes: 4096)
            let readers = (0..<500).map { index in
                Task { () -> String in
                    guard var buffer = pool.take() else { return "pool empty" }
                    let block = index % 1024
                    do {
                        _ = try await file.read(into: &buffer, at: Int64(block * 4096))
                        return buffer.bytes() == Array(bytes[block * 4096..<(block + 1) * 4096]) ? "read" : "wrong bytes"
                    } catch let error as DirectIOError where error.code == .cancelled {
                        return "refused"
                    } catch is CancellationError {
                        return "cancelled"
                    } catch {
                        return "\(error)"
                    }
                }
            }
            try await Task.sleep(nanoseconds: 1_000_000)
            await runtime.shutdown(cancellingInFlight: cancelling)
            var outcomes: [String: Int] = [:]
            for reader in readers { outcomes[await reader.value, default: 0] += 1 }
            #expect(Set(outcomes.keys).isSubset(of: ["read", "refused", "cancelled"]), "\(outcomes)")
            #expect(pool.available == 500)
            // After shutdown, I/O is refused with a clear error.
            let late = await #expect(throws: DirectIOError.self) { _ = try await file.read(count: 4096, at: 0) }
            #expect(late?.code == .cancelled)
            #expect(late?.detail?.contains("shut down") == true)
        }
    }

    @Test func badRequestsAreRefusedBeforeTheKernelSeesThem() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let (path, bytes) = try makeFile(directory, blocks: 4, seed: 5)
        let runtime = try IORuntime(rings: 1, queueDepth: 4)
        let file = try AsyncFile(path: path, runtime: runtime)
        var buffer = try AlignedBuffer(byteCount: 8192)
        // An unaligned offset is realigned (AsyncBounceTests has the rest); `.fail` refuses it.
        #expect(try await file.read(into: &buffer, count: 4096, at: 100) == 4096)
        #expect(Array(buffer.bytes().prefix(4096)) == Array(bytes[100..<4196]))
        let strict = try AsyncFile(path: path, options: OpenOptions(misaligned: .fail), runtime: runtime)
        let misaligned = await #expect(throws: DirectIOError.self) { _ = try await strict.read(into: &buffer, count: 4096, at: 100) }
        #expect(misaligned?.code == .misaligned)
        #expect(misaligned?.detail?.contains("offset alignment") == true)
        let negative = await #expect(throws: DirectIOError.self) { _ = try await file.read(count: 10, at: -1) }
        #expect(negative?.code == .invalidArgument)
        // Any offset and length through read(count:at:), short at the end, empty past it.
        #expect(try await file.read(count: 5000, at: 3) == Array(bytes[3..<5003]))
        #expect(try await file.read(count: 10_000, at: Int64(bytes.count - 100)) == Array(bytes[(bytes.count - 100)...]))
        #expect(try await file.read(count: 100, at: Int64(bytes.count + 4096)) == [])
        // Vectored, into two aligned halves.
        let halves = [UnsafeMutableRawBufferPointer(start: buffer.baseAddress, count: 4096), UnsafeMutableRawBufferPointer(start: buffer.baseAddress + 4096, count: 4096)]
        #expect(try await file.read(into: halves, at: 4096) == 8192)
        #expect(buffer.bytes() == Array(bytes[4096..<12288]))
        let readOnly = try AsyncFile(path: path, options: OpenOptions(access: .readOnly), runtime: runtime)
        let refused = await #expect(throws: DirectIOError.self) { _ = try await readOnly.write(buffer, at: 0) }
        #expect(refused?.code == .badDescriptor)
        #expect(try TestSupport.referenceRead(path, count: bytes.count) == bytes)
        await runtime.shutdown()
    }
}
