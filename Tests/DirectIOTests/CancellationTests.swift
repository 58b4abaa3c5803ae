import Glibc
import SystemPackage
import Testing
@testable import DirectIO

/// A buffer handed to the kernel comes back only after the kernel's final completion: on
/// cancellation and on shutdown (RELIABILITY-CASES 11). A read from an empty pipe stays in
/// flight until cancelled, which makes the race deterministic.
@Suite struct CancellationTests {
    private func pipePair() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        return (fds[0], fds[1])
    }

    @Test func cancellingAnInFlightReadReturnsItsBufferWithECANCELED() throws {
        let engine = try TestSupport.ringEngine(queueDepth: 8)
        let pool = try BufferPool(count: 4, bufferBytes: 4096)
        engine.register(pool)
        let (readEnd, writeEnd) = try pipePair()
        defer { close(readEnd); close(writeEnd) }

        guard let buffer = pool.take() else { Issue.record("pool empty"); return }
        let operation = IOOperation.read(fd: readEnd, into: buffer.baseAddress, count: 4096, at: -1, fixedSlot: nil)
        try engine.submit(operation, tag: 42, buffer: buffer, blockBytes: 1)
        try engine.flush()
        // In flight: nothing to reap, and the buffer is not back in the pool.
        let early = try engine.reap(minimum: 0) { _ in Issue.record("completed before cancel") }
        #expect(early == 0)
        #expect(pool.available == 3)
        #expect(engine.inFlight == 1)

        try engine.cancel(tag: 42)
        var outcomes: [IOOutcome] = []
        try engine.reap(minimum: 1) { completion in
            var completion = completion
            #expect(completion.tag == 42)
            outcomes.append(completion.outcome)
            var returned = false
            if let _ = completion.takeBuffer() { returned = true }
            #expect(returned)
        }
        #expect(outcomes == [IOOutcome(bytes: 0, errno: .canceled)])
        #expect(pool.available == 4)
        #expect(engine.inFlight == 0)

        // The cancelled read consumed nothing: bytes written now are all still in the pipe.
        let message: [UInt8] = Array("still here".utf8)
        #expect(write(writeEnd, message, message.count) == message.count)
        var got = [UInt8](repeating: 0, count: 32)
        #expect(read(readEnd, &got, 32) == message.count)
        #expect(Array(got[0..<message.count]) == message)
    }

    @Test func cancelRacingCompletionGivesExactlyOneOutcomePerRequest() throws {
        // Half the reads have data waiting (they complete), half do not (they are cancelled);
        // cancelling all of them must still yield exactly one completion each.
        let engine = try TestSupport.ringEngine(queueDepth: 64)
        let pool = try BufferPool(count: 64, bufferBytes: 4096)
        engine.register(pool)
        var pipes: [(Int32, Int32)] = []
        defer { for (r, w) in pipes { close(r); close(w) } }
        for index in 0..<64 {
            let pair = try pipePair()
            pipes.append(pair)
            if index % 2 == 0 { #expect(write(pair.1, [UInt8(index)], 1) == 1) }
        }
        for (index, pair) in pipes.enumerated() {
            guard let buffer = pool.take() else { Issue.record("pool empty"); return }
            try engine.submit(.read(fd: pair.0, into: buffer.baseAddress, count: 4096, at: -1, fixedSlot: nil), tag: UInt64(index), buffer: buffer, blockBytes: 1)
        }
        try engine.flush()
        for index in 0..<64 { try engine.cancel(tag: UInt64(index)) }
        var seen = [Int](repeating: 0, count: 64)
        while seen.reduce(0, +) < 64 {
            try engine.reap(minimum: 1) { completion in
                var completion = completion
                let index = Int(completion.tag)
                seen[index] += 1
                let buffer = completion.takeBuffer()
                if completion.outcome.succeeded {
                    #expect(index % 2 == 0)
                    #expect(completion.outcome.bytes == 1)
                    #expect(buffer?.bytes(count: 1) == [UInt8(index)])
                } else {
                    #expect(completion.outcome.errno == .canceled)
                    #expect(index % 2 == 1)
                }
            }
        }
        #expect(seen == [Int](repeating: 1, count: 64))
        #expect(pool.available == 64)
    }

    @Test func droppingTheEngineWaitsForInFlightRequestsBeforeReleasingBuffers() throws {
        let pool = try BufferPool(count: 8, bufferBytes: 4096)
        var pipes: [(Int32, Int32)] = []
        defer { for (r, w) in pipes { close(r); close(w) } }
        do {
            let engine = try TestSupport.ringEngine(queueDepth: 8)
            engine.register(pool)
            for index in 0..<8 {
                let pair = try pipePair()
                pipes.append(pair)
                guard let buffer = pool.take() else { Issue.record("pool empty"); return }
                try engine.submit(.read(fd: pair.0, into: buffer.baseAddress, count: 4096, at: -1, fixedSlot: nil), tag: UInt64(index), buffer: buffer, blockBytes: 1)
            }
            try engine.flush()
            #expect(pool.available == 0)
            #expect(engine.inFlight == 8)
        }
        // The engine is gone: it cancelled every read and reaped every completion first.
        #expect(pool.available == 8)
        // No read survived to consume data written now.
        for (index, pair) in pipes.enumerated() {
            #expect(write(pair.1, [UInt8(index)], 1) == 1)
            var byte: UInt8 = 0
            #expect(read(pair.0, &byte, 1) == 1 && byte == UInt8(index))
        }
    }

    @Test func unreapedBatchedRequestsBlockNewOnesWithAClearError() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let reference = TestSupport.pattern(count: 1 << 20, seed: 9)
        try TestSupport.referenceWrite(path, reference)
        for config in EngineTests.engines {
            let engine = try config.make(queueDepth: 4)
            let file = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: engine)
            // Synchronous calls from a full engine: each waits for a slot.
            let pool = try BufferPool(count: 4, bufferBytes: 4096)
            for index in 0..<4 {
                guard let buffer = pool.take() else { Issue.record("pool empty"); return }
                try file.submitRead(into: buffer, at: Int64(index * 4096), tag: UInt64(index))
            }
            var aligned = try AlignedBuffer(byteCount: 4096)
            // All four slots hold batched reads the caller has not reaped: a fifth request waits
            // for them to finish, then says it cannot get a slot (rather than hang, or take a
            // slot whose buffer the caller has not collected).
            let error = #expect(throws: DirectIOError.self) { _ = try file.read(into: &aligned, at: 8192) }
            #expect(error?.code == .wouldBlock)
            var reaped = 0
            try engine.reap(minimum: 4) { completion in
                var completion = completion
                let start = Int(completion.tag) * 4096
                let bytes = completion.takeBuffer()?.bytes()
                #expect(bytes == Array(reference[start..<start + 4096]))
                reaped += 1
            }
            #expect(reaped == 4)
            let result = try file.read(into: &aligned, at: 8192)
            #expect(result == 4096)
            #expect(aligned.bytes() == Array(reference[8192..<12288]))
        }
    }
}
