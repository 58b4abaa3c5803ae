import Foundation
import Glibc
import Testing
@testable import DirectIO
import DirectIOTesting

/// Async code tested the way users test theirs: `IORuntime.inMemory` serves AsyncFile from the
/// simulated device, with faults injected between the rings and the device, and every byte the
/// device holds is compared with a model.
@Suite struct AsyncInMemoryTests {
    static let span = 256 << 10

    /// Eight tasks, each in its own eighth of the file, making unaligned reads and writes
    /// while short transfers, EAGAIN, EINTR and completions out of order hit the requests:
    /// reads match the model as they go, and the device ends holding exactly the model's bytes.
    @Test func staysByteExactUnderRetryableFaultsAndReordering() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, [])
        let device = MemoryDevice()
        let initial = TestSupport.pattern(count: Self.span, seed: 301)
        #expect(device.setContents(initial, ofFileAt: path))
        let plan = FaultPlan(seed: 302, shortTransferPercent: 30, shortGranularity: 512, againPercent: 10, interruptPercent: 10, delayPercent: 30)
        let runtime = try IORuntime.inMemory(device, faults: plan, rings: 2, queueDepth: 16)
        let file = try AsyncFile(path: path, options: OpenOptions(access: .readWrite), runtime: runtime)
        let region = Self.span / 8
        let finals = try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
            for task in 0..<8 {
                group.addTask {
                    var model = Array(initial[task * region..<(task + 1) * region])
                    var random = SplitMix(seed: 400 + UInt64(task))
                    for step in 0..<60 {
                        let length = 1 + Int(random.next() % 9000)
                        let start = Int(random.next() % UInt64(region - length))
                        let offset = Int64(task * region + start)
                        if random.next() % 2 == 0 {
                            let bytes = TestSupport.pattern(count: length, seed: random.next())
                            #expect(try await file.write(bytes, at: offset) == length)
                            model.replaceSubrange(start..<start + length, with: bytes)
                        } else {
                            let got = try await file.read(count: length, at: offset)
                            #expect(got == Array(model[start..<start + length]), "task \(task) step \(step): a read at \(offset) differs from the model")
                        }
                    }
                    return (task, model)
                }
            }
            return try await group.reduce(into: [(Int, [UInt8])]()) { $0.append($1) }
        }
        let counted = await runtime.ringStatistics()
        await runtime.shutdown()
        let expected = finals.sorted { $0.0 < $1.0 }.flatMap(\.1)
        #expect(device.contents(ofFileAt: path) == expected)
        // The faults reached the requests: the rings retried and resubmitted.
        #expect(counted.reduce(0) { $0 + $1.retries } > 0 && counted.reduce(0) { $0 + $1.resubmissions } > 0, "\(counted)")
    }

    /// EIO on reads and ENOSPC on writes at chosen offsets reach the awaiting task as errors
    /// naming the operation, the path and the offset; requests elsewhere are untouched.
    @Test func errorsAtChosenOffsetsReachTheTaskWithTheirOffset() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, [])
        let device = MemoryDevice()
        let initial = TestSupport.pattern(count: Self.span, seed: 310)
        #expect(device.setContents(initial, ofFileAt: path))
        let plan = FaultPlan(seed: 311, ioErrorOffsets: [100_000], noSpaceOffsets: [200_000])
        let runtime = try IORuntime.inMemory(device, faults: plan)
        let file = try AsyncFile(path: path, options: OpenOptions(access: .readWrite), runtime: runtime)
        do {
            _ = try await file.read(count: 5000, at: 98_000)
            Issue.record("a read over an EIO offset succeeded")
        } catch let error as DirectIOError {
            #expect(error.code == .ioError && error.path == path && error.offset != nil, "\(error)")
        }
        do {
            _ = try await file.write(TestSupport.pattern(count: 3000, seed: 312), at: 199_000)
            Issue.record("a write over an ENOSPC offset succeeded")
        } catch let error as DirectIOError {
            #expect(error.code == .noSpace && error.path == path && error.offset != nil, "\(error)")
        }
        // Elsewhere everything works, and what failed changed nothing it did not report.
        #expect(try await file.read(count: 4000, at: 10_000) == Array(initial[10_000..<14_000]))
        let bytes = TestSupport.pattern(count: 4000, seed: 313)
        #expect(try await file.write(bytes, at: 150_000) == 4000)
        #expect(try await file.read(count: 4000, at: 150_000) == bytes)
        await runtime.shutdown()
        let held = try #require(device.contents(ofFileAt: path))
        #expect(Array(held[0..<98_000]) == Array(initial[0..<98_000]))
        #expect(Array(held[150_000..<154_000]) == bytes)
    }
}
