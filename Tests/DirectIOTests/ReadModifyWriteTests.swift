import Glibc
import SystemPackage
import Testing
@testable import DirectIO

/// Records how many reads each submission carried (everything else goes to the real backend).
final class SubmissionCountingBackend: WrappingBackend {
    let inner: any EngineBackend
    private var queuedReads: [Int] = []
    /// The lengths of the reads each `submit` carried, for submissions that carried any.
    private(set) var readsPerSubmission: [[Int]] = []

    init(_ inner: any EngineBackend) { self.inner = inner }


    func enqueue(_ operation: IOOperation, userData: UInt64) -> Bool {
        guard inner.enqueue(operation, userData: userData) else { return false }
        if operation.opcode == .read || operation.opcode == .readFixed { queuedReads.append(Int(operation.length)) }
        return true
    }

    func submit(waitingFor minimum: Int) throws(Errno) {
        if !queuedReads.isEmpty { readsPerSubmission.append(queuedReads) }
        queuedReads = []
        try inner.submit(waitingFor: minimum)
    }
}

@Suite struct ReadModifyWriteTests {
    /// An engine whose submissions are counted; skipped where RLIMIT_MEMLOCK refuses the ring.
    private func countingEngine(_ choice: IOEngine.Choice) throws -> (IOEngine, SubmissionCountingBackend) {
        var counting: SubmissionCountingBackend? = nil
        let engine = try TestSupport.skippingIfMemlockRefuses {
            try IOEngine(choice, queueDepth: 8, ringFlags: .anyThread, fixedBufferSlots: 64, fixedFileSlots: 8) { inner in
                let backend = SubmissionCountingBackend(inner)
                counting = backend
                return backend
            }
        }
        return (engine, try #require(counting))
    }

    @Test(arguments: [IOEngine.Choice.ioUring, .blocking])
    func theEdgeBlocksOfAnUnalignedWriteCostOneRoundTrip(choice: IOEngine.Choice) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        var model = TestSupport.pattern(count: 1 << 20, seed: 71)
        try TestSupport.referenceWrite(path, model)
        let (engine, backend) = try countingEngine(choice)
        let file = try DirectFile(path: path, engine: engine)
        let block = file.limits.offsetAlignment
        let arena = try AlignedBuffer(byteCount: 300_000)

        // 4,000 bytes from 1,000: first and last block partly covered, close together: one
        // read of the covering blocks.
        let small = TestSupport.pattern(count: 4000, seed: 72)
        #expect(try small.withUnsafeBytes { try file.write($0, at: 1000) } == 4000)
        model.replaceSubrange(1000..<5000, with: small)
        let covering = (5000 + block - 1) / block * block - 1000 / block * block
        #expect(backend.readsPerSubmission == [[covering]], "reads per submission: \(backend.readsPerSubmission)")

        // 200,000 bytes from misaligned memory at 70,001: every byte bounced, the edges far
        // apart: two one-block reads, submitted together.
        let large = TestSupport.pattern(count: 200_000, seed: 73)
        let memory = UnsafeMutableRawBufferPointer(start: arena.baseAddress + 3, count: large.count)
        memory.copyBytes(from: large)
        #expect(try file.write(UnsafeRawBufferPointer(memory), at: 70_001) == 200_000)
        model.replaceSubrange(70_001..<270_001, with: large)
        #expect(backend.readsPerSubmission.count == 2)
        #expect(backend.readsPerSubmission.last == [block, block], "reads per submission: \(backend.readsPerSubmission)")
        #expect(file.statistics.readModifyWriteBlocks == 4)
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: 1 << 20), model, "after the unaligned writes")
    }
}
