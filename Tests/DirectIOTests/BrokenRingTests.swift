import Glibc
import SystemPackage
import Testing
@testable import DirectIO

/// Fails io_uring_enter on demand, for the ring policy (`EnterBackoff`).
final class FailingEnterBackend: WrappingBackend {
    let inner: any EngineBackend
    /// Fail this many more enters, or all of them.
    var failuresLeft = 0
    var failForever = false
    private(set) var submits = 0
    private(set) var enqueued = 0

    init(_ inner: any EngineBackend) { self.inner = inner }

    func enqueue(_ operation: IOOperation, userData: UInt64) -> Bool {
        enqueued += 1
        return inner.enqueue(operation, userData: userData)
    }

    func submit(waitingFor minimum: Int) throws(Errno) {
        submits += 1
        if failForever { throw Errno.badFileDescriptor }
        if failuresLeft > 0 {
            failuresLeft -= 1
            throw Errno.noMemory
        }
        try inner.submit(waitingFor: minimum)
    }
}

/// One policy for a ring that cannot be entered, the same for every caller: waiting callers
/// keep waiting (pausing, never spinning) and get their real outcome once the ring recovers;
/// new requests are refused meanwhile; a shutdown nobody waits for keeps the buffers.
@Suite struct BrokenRingTests {
    /// Engines that gave up on a broken ring keep its request table (and the buffers in it)
    /// for good; dropping one would leave that memory unreachable, which LeakSanitizer rightly
    /// reports. The test holds them until the process exits instead.
    nonisolated(unsafe) static var keptEngines: [IOEngine] = []

    private func failingEngine() throws -> (IOEngine, FailingEnterBackend) {
        var failing: FailingEnterBackend? = nil
        let engine = try TestSupport.skippingIfMemlockRefuses {
            try IOEngine(.ioUring, queueDepth: 8, ringFlags: .anyThread, fixedBufferSlots: 64, fixedFileSlots: 8) { inner in
                let backend = FailingEnterBackend(inner)
                failing = backend
                return backend
            }
        }
        return (engine, try #require(failing))
    }

    @Test func aCallWaitingOnARingThatFailsGetsItsBytesOnceItRecovers() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: 65536, seed: 181)
        try TestSupport.referenceWrite(path, bytes)
        let (engine, backend) = try failingEngine()
        let file = try DirectFile(path: path, engine: engine)
        var buffer = try AlignedBuffer(byteCount: 8192)
        backend.failuresLeft = 5
        let before = backend.submits
        #expect(try file.read(into: &buffer, at: 8192) == 8192)
        #expect(buffer.bytes() == Array(bytes[8192..<16384]))
        #expect(engine.statistics.enterFailures == 5)
        // Five failures, then the enters that carried the request and its cancellation: a
        // pause between tries, not a spin (a spin would make thousands in the 31 ms of pauses).
        #expect(backend.submits - before <= 8, "\(backend.submits - before) enters")
    }

    @Test func newRequestsAreRefusedWhileTheRingCannotBeEnteredAndWorkAfter() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: 16384, seed: 182)
        try TestSupport.referenceWrite(path, bytes)
        let (engine, backend) = try failingEngine()
        let file = try DirectFile(path: path, engine: engine)
        var buffer = try AlignedBuffer(byteCount: 4096)
        backend.failForever = true
        #expect(throws: DirectIOError.self) { try engine.flush() }
        let queuedBefore = backend.enqueued
        let refused = #expect(throws: DirectIOError.self) { try file.read(into: &buffer, at: 0) }
        #expect(refused?.errno == .badFileDescriptor && refused?.systemCall == "io_uring_enter")
        #expect(refused?.detail?.contains("refused") == true)
        #expect(backend.enqueued == queuedBefore, "a refused request never reached the queue")
        backend.failForever = false
        #expect(try file.read(into: &buffer, at: 4096) == 4096)
        #expect(buffer.bytes() == Array(bytes[4096..<8192]))
    }

    @Test func aShutdownNobodyWaitsForKeepsTheBuffersOfARingThatStaysBroken() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, TestSupport.pattern(count: 16384, seed: 183))
        let (engine, backend) = try failingEngine()
        let pool = try BufferPool(count: 2, bufferBytes: 4096)
        let file = try DirectFile(path: path, engine: engine)
        guard let buffer = pool.take() else { Issue.record("pool empty"); return }
        try file.submitRead(into: buffer, at: 0, tag: 1)
        try engine.flush()
        backend.failForever = true
        engine.shutdown()
        // The read's buffer stays with the engine for good: the kernel was never heard to
        // finish with it.
        #expect(engine.statistics.buffersKept == 1)
        #expect(pool.available == 1)
        Self.keptEngines.append(engine)
    }
}
