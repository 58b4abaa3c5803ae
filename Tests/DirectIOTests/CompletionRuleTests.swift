import Glibc
import Testing
@testable import DirectIO

/// The meaning of every kind of result, shared by both engines (RELIABILITY-CASES 7, 8, 9).
@Suite struct CompletionRuleTests {
    @Test func fullTransferFinishes() {
        #expect(CompletionRule.step(opcode: .read, result: 4096, done: 0, remaining: 4096, retries: 0) == .finished(bytes: 4096))
    }

    @Test func shortTransferResubmitsTheRemainder() {
        #expect(CompletionRule.step(opcode: .read, result: 1024, done: 0, remaining: 4096, retries: 0) == .resubmitRemainder(bytes: 1024))
        #expect(CompletionRule.step(opcode: .write, result: 512, done: 1024, remaining: 3072, retries: 0) == .resubmitRemainder(bytes: 1536))
    }

    @Test func zeroBytesIsEndOfFileNotAnError() {
        #expect(CompletionRule.step(opcode: .read, result: 0, done: 100, remaining: 3996, retries: 0) == .finished(bytes: 100))
        #expect(CompletionRule.step(opcode: .readFixed, result: 0, done: 0, remaining: 4096, retries: 0) == .finished(bytes: 0))
    }

    @Test func directShortReadOffABlockBoundaryIsEndOfFile() {
        // 100 bytes of a 4096-byte direct read: the file ends there; resubmitting at +100 would
        // only fail alignment.
        #expect(CompletionRule.step(opcode: .read, result: 100, done: 0, remaining: 4096, retries: 0, blockBytes: 512) == .finished(bytes: 100))
        #expect(CompletionRule.step(opcode: .read, result: 1024, done: 0, remaining: 4096, retries: 0, blockBytes: 512) == .resubmitRemainder(bytes: 1024))
    }

    @Test func againAndInterruptedAreRetriedWhole() {
        #expect(CompletionRule.step(opcode: .read, result: -EAGAIN, done: 0, remaining: 4096, retries: 0) == .retry)
        #expect(CompletionRule.step(opcode: .write, result: -EINTR, done: 512, remaining: 3584, retries: 3) == .retry)
        #expect(CompletionRule.step(opcode: .write, result: -EAGAIN, done: 0, remaining: 1, retries: CompletionRule.retryLimit) == .failed(errno: EAGAIN, bytes: 0))
    }

    @Test func errorsKeepTheBytesDoneBeforeThem() {
        #expect(CompletionRule.step(opcode: .write, result: -ENOSPC, done: 8192, remaining: 4096, retries: 0) == .failed(errno: ENOSPC, bytes: 8192))
        #expect(CompletionRule.step(opcode: .fsync, result: -EIO, done: 0, remaining: 0, retries: 0) == .failed(errno: EIO, bytes: 0))
    }

    @Test func operationsWithoutDataFinishWithTheirResult() {
        #expect(CompletionRule.step(opcode: .fsync, result: 0, done: 0, remaining: 0, retries: 0) == .finished(bytes: 0))
        #expect(CompletionRule.step(opcode: .nop, result: 0, done: 0, remaining: 0, retries: 0) == .finished(bytes: 0))
    }

    @Test func vectoredRemainderSkipsFinishedBuffersAndTrimsThePartialOne() throws {
        var storage = [UInt8](repeating: 0, count: 300)
        try storage.withUnsafeMutableBytes { raw in
            let base = try #require(raw.baseAddress)
            let vectors = UnsafeMutablePointer<iovec>.allocate(capacity: 3)
            defer { vectors.deallocate() }
            vectors[0] = iovec(iov_base: base, iov_len: 100)
            vectors[1] = iovec(iov_base: base + 100, iov_len: 100)
            vectors[2] = iovec(iov_base: base + 200, iov_len: 100)
            let operation = IOOperation.vectored(.readv, fd: 3, vectors: vectors, count: 3, at: 1000)
            #expect(operation.byteCount == 300)
            let rest = operation.advanced(by: 150)
            #expect(rest.offset == 1150)
            #expect(rest.length == 2)
            #expect(rest.byteCount == 150)
            let first = try #require(UnsafePointer<iovec>(bitPattern: rest.address))
            #expect(first.pointee.iov_base == base + 150)
            #expect(first.pointee.iov_len == 50)
        }
    }

    @Test func plainRemainderAdvancesAddressOffsetAndLength() {
        let operation = IOOperation(opcode: .readFixed, fd: 3, address: 0x10000, length: 4096, offset: 8192, bufferIndex: 7)
        let rest = operation.advanced(by: 1024)
        #expect(rest.address == 0x10400)
        #expect(rest.length == 3072)
        #expect(rest.offset == 9216)
        #expect(rest.bufferIndex == 7)
    }
}
