import Glibc
import Testing
@testable import DirectIO

/// The raw ring: setup, probe, submission and completion bookkeeping, CQ overflow.
@Suite struct RingTests {
    @Test func setupAcceptsFioFlagsOnThisKernel() throws {
        let ring = try TestSupport.ring(entries: 8, flags: .threadPerCore)
        // Linux 6.1+ accepts all of them; the machine runs 6.18.
        let flags = ring.setupFlags
        let cqEntries = ring.cq.entries
        let sqEntries = ring.sq.entries
        #expect(flags == .threadPerCore)
        #expect(cqEntries == 16)
        #expect(sqEntries == 8)
        let mayDrop = ring.mayDropCompletions
        #expect(!mayDrop)
    }

    @Test func probeReportsTheOpcodesDirectIOUses() throws {
        let ring = try TestSupport.ring(entries: 4, flags: .anyThread)
        let support = try ring.probe()
        for opcode in [Opcode.nop, .read, .write, .readFixed, .writeFixed, .readv, .writev, .fsync, .fallocate, .asyncCancel] {
            #expect(support.supports(opcode), "\(opcode)")
        }
        // An opcode number past the kernel's last is reported unsupported, not assumed.
        #expect(!support.supports(rawOpcode: 255))
        #expect(support.lastOpcode >= Opcode.sendZeroCopy.rawValue)
    }

    @Test func overflowedCompletionsAreAllDelivered() throws {
        // 4 SQEs and 8 CQEs; 64 NOPs submitted without reaping overflow the CQ 7 times over.
        // With IORING_FEAT_NODROP the kernel keeps the excess; reaping must get every one.
        var ring = try TestSupport.ring(entries: 4, flags: .anyThread)
        let total = 64
        var submitted = 0
        while submitted < total {
            while submitted < total, let sqe = ring.sq.nextEntry() {
                sqe.prepareNop()
                sqe.pointee.user_data = UInt64(submitted)
                submitted += 1
            }
            try ring.submit()
        }
        var seen = Set<UInt64>()
        var attempts = 0
        while seen.count < total && attempts < 1000 {
            _ = ring.reap { completion in
                #expect(completion.result == 0)
                seen.insert(completion.userData)
            }
            if seen.count < total { try ring.submit(waitingFor: 1) }
            attempts += 1
        }
        #expect(seen == Set((0..<UInt64(total))))
        let dropped = ring.cq.droppedCount
        #expect(dropped == 0)
    }

    @Test func aRingWithoutIndexArrayEnteredThroughItsRegisteredDescriptorDeliversEverything() throws {
        // NO_SQARRAY (6.6+) and a registered ring descriptor (5.18+): the machine runs 6.18.
        var ring = try TestSupport.ring(entries: 4, flags: .anyThread)
        let flags = ring.setupFlags
        #expect(flags.contains(.noSubmissionArray))
        let registered = ring.registerDescriptor()
        #expect(registered)
        // 40 NOPs through a 4-entry queue: every SQE slot is reused many times, with no index
        // array between the ring and the SQEs, and every enter names the registered index.
        var submitted = 0
        var seen = Set<UInt64>()
        var attempts = 0
        while seen.count < 40 && attempts < 1000 {
            while submitted < 40, let sqe = ring.sq.nextEntry() {
                sqe.prepareNop()
                sqe.pointee.user_data = UInt64(submitted)
                submitted += 1
            }
            try ring.submit(waitingFor: 1)
            _ = ring.reap { completion in
                #expect(completion.result == 0)
                seen.insert(completion.userData)
            }
            attempts += 1
        }
        #expect(seen == Set(0..<40))
    }

    @Test func submissionQueueReportsFullAndRecovers() throws {
        var ring = try TestSupport.ring(entries: 2, flags: .anyThread)
        for _ in 0..<2 {
            let entry = ring.sq.nextEntry()
            entry?.prepareNop()
            #expect(entry != nil)
        }
        let overflowEntry = ring.sq.nextEntry()
        #expect(overflowEntry == nil)
        try ring.submit()
        let again = ring.sq.nextEntry()
        again?.prepareNop()
        #expect(again != nil)
        try ring.submit(waitingFor: 3)
        var count = 0
        _ = ring.reap { _ in count += 1 }
        #expect(count == 3)
    }
}
