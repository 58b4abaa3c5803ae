import CDirectIO
import Glibc
import SystemPackage
import Testing
@testable import DirectIO

/// A backend that answers SEND_ZC itself, like the kernel does but on the test's schedule:
/// the send's completion (with IORING_CQE_F_MORE) at once, the notification only when the
/// test releases it. Everything else goes to the real backend.
final class HeldNotificationBackend: WrappingBackend {
    let inner: any EngineBackend
    /// The send completion's result; `fullLength` sends everything asked.
    static let fullLength = Int32.min
    var sendResult = fullLength
    var copied = false
    var releaseNotifications = false
    private var firstCompletions: [RawCompletion] = []
    private var notifications: [RawCompletion] = []

    init(_ inner: any EngineBackend) { self.inner = inner }

    func supports(_ opcode: Opcode) -> Bool { opcode == .sendZeroCopy || inner.supports(opcode) }

    func enqueue(_ operation: IOOperation, userData: UInt64) -> Bool {
        guard operation.opcode == .sendZeroCopy else { return inner.enqueue(operation, userData: userData) }
        firstCompletions.append(RawCompletion(userData: userData, result: sendResult == Self.fullLength ? Int32(operation.length) : sendResult, flags: DIO_IORING_CQE_F_MORE))
        notifications.append(RawCompletion(userData: userData, result: copied ? Int32(bitPattern: DIO_IORING_NOTIF_USAGE_ZC_COPIED) : 0, flags: DIO_IORING_CQE_F_NOTIF))
        return true
    }

    func submit(waitingFor minimum: Int) throws(Errno) {
        let ready = firstCompletions.count + (releaseNotifications ? notifications.count : 0)
        try inner.submit(waitingFor: ready > 0 ? 0 : minimum)
    }

    func reap(into buffer: UnsafeMutablePointer<RawCompletion>, limit: Int) -> Int {
        var count = inner.reap(into: buffer, limit: limit)
        while count < limit, !firstCompletions.isEmpty {
            buffer[count] = firstCompletions.removeFirst()
            count += 1
        }
        while releaseNotifications, count < limit, !notifications.isEmpty {
            buffer[count] = notifications.removeFirst()
            count += 1
        }
        return count
    }
}

@Suite struct ZeroCopySendTests {
    private func engine() throws -> (IOEngine, HeldNotificationBackend) {
        var held: HeldNotificationBackend? = nil
        let engine = try IOEngine(.automatic, queueDepth: 8, ringFlags: .anyThread, fixedBufferSlots: 64, fixedFileSlots: 8) { inner in
            let backend = HeldNotificationBackend(inner)
            held = backend
            return backend
        }
        guard let held else { throw DirectIOError(.unexpected, operation: "test engine", detail: "the backend was not wrapped") }
        return (engine, held)
    }

    @Test(arguments: [HeldNotificationBackend.fullLength, 1000, -ECONNRESET])
    func theBufferComesBackOnlyAfterTheNotification(sendResult: Int32) throws {
        let (engine, backend) = try engine()
        backend.sendResult = sendResult
        backend.copied = true
        let pool = try BufferPool(count: 2, bufferBytes: 8192)
        engine.register(pool)
        guard var buffer = pool.take() else { Issue.record("pool empty"); return }
        _ = buffer.copy(from: TestSupport.pattern(count: 8192, seed: 1))
        try engine.submitZeroCopySend(buffer, count: 4096, to: 12345, tag: 7)
        // The send's completion has arrived, the notification has not: nothing is handed back
        // and the buffer is still the kernel's.
        var handed = try engine.reap(minimum: 0) { _ in }
        handed += try engine.reap(minimum: 0) { _ in }
        #expect(handed == 0)
        #expect(pool.available == 1)
        #expect(engine.inFlight == 1)

        backend.releaseNotifications = true
        var outcome: IOOutcome? = nil
        var tag: UInt64 = 0
        try engine.reap(minimum: 1) { (completion: consuming IOCompletion) in
            outcome = completion.outcome
            tag = completion.tag
        }
        #expect(tag == 7)
        #expect(outcome?.copiedByKernel == true)
        if sendResult < 0 && sendResult != HeldNotificationBackend.fullLength {
            #expect(outcome?.errno == Errno(rawValue: -sendResult))
        } else {
            #expect(outcome?.bytes == (sendResult == HeldNotificationBackend.fullLength ? 4096 : Int(sendResult)))
            #expect(outcome?.errno == nil)
        }
        #expect(pool.available == 2)
        #expect(engine.inFlight == 0)
    }

    @Test func shutdownWaitsForNotificationsToo() throws {
        let (engine, backend) = try engine()
        let pool = try BufferPool(count: 1, bufferBytes: 4096)
        engine.register(pool)
        guard let buffer = pool.take() else { Issue.record("pool empty"); return }
        try engine.submitZeroCopySend(buffer, to: 12345, tag: 1)
        _ = try engine.reap(minimum: 0) { _ in }
        #expect(pool.available == 0)
        backend.releaseNotifications = true
        engine.shutdown()
        #expect(pool.available == 1)
    }

    @Test func badArgumentsAreRefusedBeforeTheKernelSeesThem() throws {
        let (engine, _) = try engine()
        let pool = try BufferPool(count: 1, bufferBytes: 4096)
        let error = #expect(throws: DirectIOError.self) {
            guard let buffer = pool.take() else { return }
            try engine.submitZeroCopySend(buffer, bufferOffset: 4000, count: 200, to: 1, tag: 1)
        }
        #expect(error?.code == .invalidArgument)
        #expect(pool.available == 1)
        let blocking = try IOEngine(.blocking)
        let unsupported = #expect(throws: DirectIOError.self) {
            guard let buffer = pool.take() else { return }
            try blocking.submitZeroCopySend(buffer, to: 1, tag: 1)
        }
        #expect(unsupported?.code == .unsupported)
        #expect(pool.available == 1)
    }
}
