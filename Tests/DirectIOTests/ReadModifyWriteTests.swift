import Glibc
import SystemPackage
import Testing
@testable import DirectIO

/// Records how many reads each submission carried (everything else goes to the real backend).
final class SubmissionCountingBackend: EngineBackend {
    let inner: any EngineBackend
    private var queuedReads = 0
    /// The reads each `submit` carried, for submissions that carried any.
    private(set) var readsPerSubmission: [Int] = []

    init(_ inner: any EngineBackend) { self.inner = inner }

    var kind: EngineKind { inner.kind }
    var submissionCapacity: Int { inner.submissionCapacity }
    var completionCapacity: Int { inner.completionCapacity }
    var fixedBufferSlots: Int { inner.fixedBufferSlots }
    var fixedFileSlots: Int { inner.fixedFileSlots }
    func supports(_ opcode: Opcode) -> Bool { inner.supports(opcode) }
    func updateFixedBuffers(first: Int, regions: [iovec]) throws(Errno) { try inner.updateFixedBuffers(first: first, regions: regions) }
    func updateFixedFiles(first: Int, fds: [Int32]) throws(Errno) { try inner.updateFixedFiles(first: first, fds: fds) }
    func enqueueCancel(target: UInt64, userData: UInt64) -> Bool { inner.enqueueCancel(target: target, userData: userData) }
    func reap(into buffer: UnsafeMutablePointer<RawCompletion>, limit: Int) -> Int { inner.reap(into: buffer, limit: limit) }

    func enqueue(_ operation: IOOperation, userData: UInt64) -> Bool {
        guard inner.enqueue(operation, userData: userData) else { return false }
        if operation.opcode == .read || operation.opcode == .readFixed { queuedReads += 1 }
        return true
    }

    func submit(waitingFor minimum: Int) throws(Errno) {
        if queuedReads > 0 { readsPerSubmission.append(queuedReads) }
        queuedReads = 0
        try inner.submit(waitingFor: minimum)
    }
}

@Suite struct ReadModifyWriteTests {
    @Test(arguments: [IOEngine.Choice.ioUring, .blocking])
    func theTwoEdgeBlocksOfAnUnalignedWriteAreReadTogether(choice: IOEngine.Choice) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        var model = TestSupport.pattern(count: 65536, seed: 71)
        try TestSupport.referenceWrite(path, model)
        var counting: SubmissionCountingBackend? = nil
        let engine: IOEngine
        do {
            engine = try IOEngine(choice, queueDepth: 8, ringFlags: .anyThread, fixedBufferSlots: 64, fixedFileSlots: 8) { inner in
                let backend = SubmissionCountingBackend(inner)
                counting = backend
                return backend
            }
        } catch {
            try TestSupport.skipIfMemlockRefused(error, "an io_uring ring")
            throw error
        }
        let backend = try #require(counting)
        let file = try DirectFile(path: path, engine: engine)
        let block = file.limits.offsetAlignment
        // 4,000 bytes from 1,000: both its first and its last block are partly covered.
        let bytes = TestSupport.pattern(count: 4000, seed: 72)
        #expect(try bytes.withUnsafeBytes { try file.write($0, at: 1000) } == 4000)
        model.replaceSubrange(1000..<5000, with: bytes)
        #expect(file.statistics.readModifyWriteBlocks == 2, "block size \(block)")
        // Both edge reads went to the kernel in one submission.
        #expect(backend.readsPerSubmission == [2], "reads per submission: \(backend.readsPerSubmission)")
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: 65536), model, "after the unaligned write")
    }
}
