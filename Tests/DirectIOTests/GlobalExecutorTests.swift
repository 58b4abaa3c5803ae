import Foundation
import Glibc
import Synchronization
import Testing
@testable import DirectIO

/// The rings as Swift's global executor. Installing must happen before any task runs, and
/// swift-testing runs every test in a task, so the suites run on the rings in a second process
/// of this test bundle started with `DIRECTIO_GLOBAL_EXECUTOR=rings` (installed before `main`).
@Suite(.serialized) struct GlobalExecutorTests {
    /// The async suites, and `OnTheRings`, which runs only where the rings are installed.
    /// (Of the log's tests, those with tasks: its power-cut simulations are long synchronous work.)
    static let suitesOnTheRings = "OnTheRings|AsyncTests|AsyncBounceTests|AsyncInMemoryTests|IOScopeTests|CancellationTests|DurableLogTests/tasks|DurableLogTests/powerCutsDuringAsync"

    @Test(.enabled(if: IORuntime.globalExecutorRuntime == nil, "this process's rings are already installed"))
    func installingAfterTasksHaveStartedIsRefused() throws {
        let runtime = try IORuntime(rings: 1, queueDepth: 8, engine: .blocking)
        do {
            try runtime.installAsGlobalExecutor()
            Issue.record("installed from a test's task, after tasks had started")
        } catch {
            #expect(error.operation == "install I/O runtime as global executor")
            #expect(error.detail?.contains("tasks have started") == true, "\(error)")
        }
        #expect(IORuntime.globalExecutorRuntime == nil)
    }

    @Test(.enabled(if: IORuntime.globalExecutorRuntime == nil, "this process's rings are already installed"), .timeLimit(.minutes(10)))
    func asyncSuitesPassWithTheRingsAsTheGlobalExecutor() throws {
        let (status, output) = try TestSupport.runThisBundle(filter: Self.suitesOnTheRings, environment: ["DIRECTIO_GLOBAL_EXECUTOR": "rings"])
        #expect(status == 0, "\(output.suffix(6000))")
        // The suite that checks where tasks run really ran (and so did the async suites).
        #expect(output.contains("Suite OnTheRings passed"), "\(output.suffix(3000))")
        #expect(output.contains("Suite AsyncTests passed"), "\(output.suffix(3000))")
        #expect(!output.contains("DIRECTIO_GLOBAL_EXECUTOR=rings:"), "the install failed: \(output.suffix(3000))")
    }

    @Test(.enabled(if: IORuntime.globalExecutorRuntime == nil, "this process's rings are already installed"), .timeLimit(.minutes(2)))
    func tasksOutliveTheInstalledRingsOnSwiftsExecutor() throws {
        let (status, output) = try TestSupport.runThisBundle(filter: "AfterTheRingsStop", environment: ["DIRECTIO_GLOBAL_EXECUTOR": "rings", "DIRECTIO_TEST_STOP_RINGS": "1"])
        #expect(status == 0, "\(output.suffix(4000))")
        #expect(output.contains("Suite AfterTheRingsStop passed"), "\(output.suffix(3000))")
    }

    @Test func anUnknownEnvironmentValueIsSaidAndChangesNothing() throws {
        let (status, output) = try TestSupport.runThisBundle(filter: "OnTheRings", environment: ["DIRECTIO_GLOBAL_EXECUTOR": "ringz"])
        #expect(status == 0, "\(output.suffix(3000))")
        #expect(output.contains("DIRECTIO_GLOBAL_EXECUTOR=ringz is not understood"), "\(output.suffix(2000))")
        // Not installed, so the suite was skipped rather than run.
        #expect(output.contains("Suite OnTheRings skipped"), "\(output.suffix(3000))")
    }
}

/// Runs only in the process where `DIRECTIO_GLOBAL_EXECUTOR=rings` installed the shared runtime.
@Suite(.enabled(if: IORuntime.globalExecutorRuntime != nil, "needs DIRECTIO_GLOBAL_EXECUTOR=rings (GlobalExecutorTests starts such a process)"))
struct OnTheRings {
    private var runtime: IORuntime {
        get throws {
            guard let runtime = IORuntime.globalExecutorRuntime else { throw DirectIOError(.unexpected, operation: "test") }
            return runtime
        }
    }

    /// The index of the installed ring whose thread is running the caller, if any.
    private static func ring() -> Int? {
        guard let executor = RingExecutor.current, let runtime = IORuntime.globalExecutorRuntime else { return nil }
        return runtime.executors.firstIndex { $0 === executor }
    }

    @Test func everyKindOfTaskRunsOnARing() async throws {
        #expect(try runtime === IORuntime.shared())
        #expect(Self.ring() != nil, "the test's own task")
        let detached = await Task.detached { Self.ring() }.value
        #expect(detached != nil, "a detached task")
        let children = await withTaskGroup(of: Int?.self) { group in
            for _ in 0..<64 { group.addTask { Self.ring() } }
            return await group.reduce(into: [Int?]()) { $0.append($1) }
        }
        #expect(children.allSatisfy { $0 != nil }, "child tasks: \(children)")
        async let other = Self.ring()
        #expect(await other != nil, "async let")
        // A task made from a thread that is no ring's is spread round robin over the rings.
        let fromThread = await withCheckedContinuation { (done: CheckedContinuation<Int?, Never>) in
            Thread.detachNewThread { Task { done.resume(returning: Self.ring()) } }
        }
        #expect(fromThread != nil, "a task made on another thread")
    }

    @Test func readsAndWritesStayByteExactWithThousandsInFlight() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: 2048 * 4096, seed: 41)
        try TestSupport.referenceWrite(path, bytes)
        let runtime = try runtime
        let file = try AsyncFile(path: path, runtime: runtime)
        // 1,500 reads at once, unaligned ones among them (the bounce path), each from its task.
        let failures = await withTaskGroup(of: String?.self) { group in
            for index in 0..<1500 {
                group.addTask {
                    let offset = (index * 7919 * 13) % (bytes.count - 6000)
                    let count = index % 3 == 0 ? 4096 : 1 + (index * 31) % 6000
                    do {
                        let got = try await file.read(count: count, at: Int64(offset))
                        guard got[...] == bytes[offset..<offset + count] else { return "\(count) bytes at \(offset) differ" }
                    } catch { return "\(error)" }
                    guard Self.ring() != nil else { return "resumed off the rings" }
                    return nil
                }
            }
            return await group.reduce(into: [String]()) { if let failure = $1 { $0.append(failure) } }
        }
        #expect(failures.isEmpty, "\(failures.prefix(3))")

        // Writes at any offset from many tasks, to disjoint ranges; pread sees every one.
        let written = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<300 {
                group.addTask {
                    let data = TestSupport.pattern(count: 5000, seed: UInt64(index) + 900)
                    return (try? await file.write(data, at: Int64(index * 6001 + 7))) == 5000
                }
            }
            return await group.allSatisfy { $0 }
        }
        #expect(written)
        try await file.sync(dataOnly: true)
        for index in stride(from: 0, to: 300, by: 23) {
            #expect(try TestSupport.referenceRead(path, count: 5000, at: Int64(index * 6001 + 7)) == TestSupport.pattern(count: 5000, seed: UInt64(index) + 900))
        }
    }

    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        var isSet: Bool { value.load(ordering: .acquiring) }
        func set() { value.store(true, ordering: .releasing) }
    }

    actor Tally {
        var total = 0
        var rings: Set<Int> = []
        func add(_ value: Int) {
            total += value
            if let ring = OnTheRings.ring() { rings.insert(ring) }
        }
    }

    @Test func actorsRunOnTheRingsAndKeepTheirState() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, TestSupport.pattern(count: 64 * 4096, seed: 7))
        let file = try AsyncFile(path: path, runtime: try runtime)
        let tally = Tally()
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<500 {
                group.addTask {
                    let got = (try? await file.read(count: 100, at: Int64(index * 97)))?.count ?? 0
                    await tally.add(got)
                }
            }
        }
        #expect(await tally.total == 500 * 100)
        #expect(await !tally.rings.isEmpty, "the actor's methods ran on a ring's thread")
    }

    @Test func sleepingTasksWakeOnTheirRingAfterTheirTime() async throws {
        let start = ContinuousClock.now
        try await Task.sleep(for: .milliseconds(30))
        #expect(ContinuousClock.now - start >= .milliseconds(30))
        #expect(Self.ring() != nil)
        let before = DispatchTime.now().uptimeNanoseconds
        try await Task.sleep(nanoseconds: 20_000_000)
        #expect(DispatchTime.now().uptimeNanoseconds - before >= 20_000_000)
        // Many sleepers with different deadlines all wake, each after its own time.
        let late = await withTaskGroup(of: Bool.self) { group in
            for index in 0..<200 {
                group.addTask {
                    let wanted = Duration.milliseconds((index * 37) % 50)
                    let began = ContinuousClock.now
                    try? await Task.sleep(for: wanted)
                    return ContinuousClock.now - began >= wanted && Self.ring() != nil
                }
            }
            return await group.allSatisfy { $0 }
        }
        #expect(late)
        // A cancelled sleep ends early with CancellationError.
        let sleeper = Task { try await Task.sleep(for: .seconds(30)) }
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
    }

    @Test(.timeLimit(.minutes(1)))
    func ioCompletesBesideACPUBoundTaskOnTheSameRing() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: 256 * 4096, seed: 3)
        try TestSupport.referenceWrite(path, bytes)
        let file = try AsyncFile(path: path, runtime: try runtime)
        let ioDone = Flag()
        let home = Self.ring()
        try #require(home != nil)
        try await withThrowingTaskGroup(of: Void.self) { group in
            // Spins, yielding now and then, until the I/O tasks are done (or 20 s pass).
            group.addTask {
                let deadline = ContinuousClock.now + .seconds(20)
                var spins = 0
                while !ioDone.isSet && ContinuousClock.now < deadline {
                    for _ in 0..<10_000 { spins &+= 1 }
                    #expect(Self.ring() == home, "the CPU-bound task moved ring")
                    await Task.yield()
                }
                let done = ioDone.isSet
                #expect(done, "the I/O did not complete beside the CPU-bound task")
            }
            group.addTask {
                for round in 0..<200 {
                    let block = (round * 31) % 256
                    let got = try await file.read(count: 4096, at: Int64(block * 4096))
                    #expect(got[...] == bytes[block * 4096..<(block + 1) * 4096])
                }
                #expect(Self.ring() == home, "the I/O task moved ring")
                ioDone.set()
            }
            try await group.waitForAll()
        }
    }
}

/// Runs only in a process started by `tasksOutliveTheInstalledRingsOnSwiftsExecutor`: stops the
/// installed runtime, which no other test there uses.
@Suite(.enabled(if: IORuntime.globalExecutorRuntime != nil && ProcessInfo.processInfo.environment["DIRECTIO_TEST_STOP_RINGS"] != nil,
                "needs DIRECTIO_GLOBAL_EXECUTOR=rings and DIRECTIO_TEST_STOP_RINGS (GlobalExecutorTests starts such a process)"))
struct AfterTheRingsStop {
    @Test func tasksGoOnWithoutTheRingsAndTheirIOIsRefused() async throws {
        let runtime = try #require(IORuntime.globalExecutorRuntime)
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: 64 * 4096, seed: 5)
        try TestSupport.referenceWrite(path, bytes)
        let file = try AsyncFile(path: path, runtime: runtime)
        // Reads in flight while the rings stop: each finishes byte-exact or is refused.
        let outcomes = await withTaskGroup(of: String?.self) { group in
            for index in 0..<200 {
                group.addTask {
                    do {
                        let got = try await file.read(count: 4096, at: Int64((index % 64) * 4096))
                        return got[...] == bytes[(index % 64) * 4096..<(index % 64 + 1) * 4096] ? nil : "read \(index) differs"
                    } catch let error as DirectIOError where error.code == .cancelled {
                        return nil
                    } catch is CancellationError {
                        return nil
                    } catch {
                        return "\(error)"
                    }
                }
            }
            group.addTask {
                await runtime.shutdown()
                return nil
            }
            return await group.reduce(into: [String]()) { if let failure = $1 { $0.append(failure) } }
        }
        #expect(outcomes.isEmpty, "\(outcomes.prefix(3))")
        // Tasks, yields, sleeps and children still run, on Swift's own executor now.
        #expect(RingExecutor.current == nil)
        await Task.yield()
        try await Task.sleep(for: .milliseconds(5))
        let sum = await withTaskGroup(of: Int.self) { group in
            for value in 1...100 { group.addTask { value } }
            return await group.reduce(0, +)
        }
        #expect(sum == 5050)
        await #expect(throws: (any Error).self) { _ = try await file.read(count: 4096, at: 0) }
    }
}

