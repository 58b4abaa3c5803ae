import CDirectIO
import Foundation
import Glibc
import Testing
@testable import DirectIO
import DIOCommands

/// Cases from RELIABILITY-CASES.md not covered elsewhere: fork with I/O in flight (16),
/// mixed buffered and direct access (21), ENOSPC (with the system tests, below).
@Suite struct ReliabilityTests {
    @Test(arguments: EngineTests.engines)
    func forkWithReadsInFlightLeavesTheParentsDataCorrect(config: EngineConfig) throws {
        // Pool memory is MADV_DONTFORK: the child never maps it, so DMA into it cannot land in
        // a page the child took over (open(2) NOTES). The parent also writes near the buffers
        // while the reads are in flight, which is what broke pre-FOLL_PIN kernels.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let reference = TestSupport.pattern(count: 1 << 20, seed: 101)
        try TestSupport.referenceWrite(path, reference)
        let engine = try config.make(queueDepth: 16)
        let pool = try BufferPool(count: 16, bufferBytes: 65536 + 4096)
        engine.register(pool)
        let file = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: engine)
        for round in 0..<4 {
            for block in 0..<16 {
                guard var buffer = pool.take() else { Issue.record("pool empty"); return }
                buffer.withUnsafeMutableBytes { $0[65536] = 0xEE }  // a page the read does not cover
                try file.submitRead(into: buffer, count: 65536, at: Int64(block * 65536), tag: UInt64(block))
            }
            try engine.flush()
            let child = dio_fork_and_exit_child()
            #expect(child > 0)
            var status: Int32 = 0
            waitpid(child, &status, 0)
            var checked = 0
            try engine.reap(minimum: 16) { completion in
                var completion = completion
                let start = Int(completion.tag) * 65536
                let bytes = completion.takeBuffer()?.bytes(count: 65536)
                #expect(completion.outcome.bytes == 65536)
                TestSupport.expectSameBytes(bytes ?? [], Array(reference[start..<start + 65536]), "round \(round), block \(completion.tag)")
                checked += 1
            }
            #expect(checked == 16)
        }
    }

    @Test func mixedBufferedAndDirectAccessSeesTheLastWrite() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, [UInt8](repeating: 1, count: 65536))
        let direct = try DirectFile(path: path)
        let buffered = try DirectFile(path: path, options: OpenOptions(directIO: .disabled))
        var aligned = try AlignedBuffer(byteCount: 65536)
        for round in UInt8(2)..<UInt8(8) {
            // Buffered write (dirty page cache), then a direct read: the kernel writes the
            // dirty pages back before the direct read (filemap_write_and_wait_range).
            #expect(try buffered.write([UInt8](repeating: round, count: 4096), at: 8192) == 4096)
            #expect(try direct.read(into: &aligned, at: 0) == 65536)
            #expect(aligned.bytes()[8192..<12288].allSatisfy { $0 == round })
            // Direct write, then a buffered read: the direct write invalidated the cached pages.
            aligned.copy(from: [UInt8](repeating: round &+ 100, count: 65536))
            #expect(try direct.write(aligned, count: 4096, at: 8192) == 4096)
            var back = [UInt8](repeating: 0, count: 4096)
            #expect(try buffered.read(into: &back, at: 8192) == 4096)
            #expect(back.allSatisfy { $0 == round &+ 100 })
        }
    }
}
