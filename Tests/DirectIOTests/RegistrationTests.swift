import Foundation
import Glibc
import Testing
@testable import DirectIO

/// Fixed files, fixed buffers and the memory behind them.
@Suite struct RegistrationTests {
    @Test func filesTakeFixedSlotsAndGiveThemBackOnClose() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let reference = TestSupport.pattern(count: 4096, seed: 12)
        try TestSupport.referenceWrite(path, reference)
        // Twice as many opens as table slots: each close must free its slot.
        let engine = try TestSupport.ringEngine(queueDepth: 4, fixedFileSlots: 8)
        var buffer = try AlignedBuffer(byteCount: 4096)
        for round in 0..<16 {
            let file = try DirectFile(path: path, options: OpenOptions(access: .readOnly), engine: engine)
            let slot = file.fileSlot
            #expect(slot >= 0, "round \(round)")
            let got = try file.read(into: &buffer, at: 0)
            #expect(got == 4096)
            #expect(buffer.bytes() == reference)
            if round % 2 == 0 { try file.close() }
        }
        #expect(engine.statistics.fixedFileRequests == 16)
    }

    /// An AsyncFile gets a ring's fixed-file slot from its second request on; one used once is
    /// closed at once when dropped, and its descriptor number, reused by the next file at
    /// once, reaches that file's bytes, never the old one's, whether the old file was used
    /// once (closed directly) or more (closed through the rings).
    @Test func asyncFilesRegisterFromTheirSecondRequestAndReusedNumbersReachTheNewFile() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let runtime = try IORuntime(rings: 1, queueDepth: 8)
        guard runtime.usesIOUring else {
            print("skipped: io_uring unavailable here, so no fixed-file table")
            return
        }
        let pool = try BufferPool(count: 1, bufferBytes: 4096)
        await runtime.register(pool)
        guard var buffer = pool.take() else { Issue.record("pool empty"); return }
        var expected: [[UInt8]] = []
        for index in 0..<12 {
            let bytes = TestSupport.pattern(count: 4096, seed: UInt64(900 + index))
            try TestSupport.referenceWrite(directory + "/f\(index)", bytes)
            expected.append(bytes)
        }
        var before = (await runtime.ringStatistics())[0].fixedFileRequests
        var descriptors: [Int32] = []
        for index in 0..<12 {
            let uses = index % 3 == 2 ? 3 : 1
            let file = try AsyncFile(path: directory + "/f\(index)", options: OpenOptions(access: .readOnly), runtime: runtime)
            descriptors.append(file.descriptor)
            for use in 0..<uses {
                buffer.baseAddress.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
                #expect(try await file.read(into: &buffer, at: 0) == 4096)
                #expect(Array(UnsafeRawBufferPointer(start: buffer.baseAddress, count: 4096)) == expected[index], "file \(index), read \(use): another file's bytes")
            }
            let after = (await runtime.ringStatistics())[0].fixedFileRequests
            #expect(after - before == uses - 1, "file \(index): \(after - before) of \(uses) requests named a fixed-file slot")
            before = after
            if uses == 1 {
                let fd = file.descriptor
                _ = consume file
                #expect(fcntl(fd, F_GETFD) == -1, "a file used once was not closed when dropped")
            }
        }
        #expect(Set(descriptors).count < descriptors.count, "no descriptor number was reused: the test did not test reuse")
        _ = consume buffer
        await runtime.shutdown()
    }

    @Test(arguments: EngineTests.engines)
    func closingAFileSubmitsItsQueuedRequestsFirst(config: EngineConfig) throws {
        // A queued request names its file by number; closing must not let that number reach
        // the kernel after it has been given to another file.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let engine = try config.make(queueDepth: 8)
        let pool = try BufferPool(count: 4, bufferBytes: 4096)
        engine.register(pool)
        let first = directory + "/first"
        let second = directory + "/second"
        let bytes = TestSupport.pattern(count: 4096, seed: 13)
        do {
            let file = try DirectFile(path: first, options: OpenOptions(create: true), engine: engine)
            guard var buffer = pool.take() else { Issue.record("pool empty"); return }
            buffer.copy(from: bytes)
            try file.submitWrite(buffer, at: 0, tag: 1)
            try file.close()
        }
        // The next file likely reuses the descriptor number and the fixed-file slot.
        let other = try DirectFile(path: second, options: OpenOptions(create: true), engine: engine)
        var outcomes: [IOOutcome] = []
        try engine.reap(minimum: 1) { outcomes.append($0.outcome) }
        #expect(outcomes == [IOOutcome(bytes: 4096, errno: nil)])
        #expect(try TestSupport.referenceRead(first, count: 8192) == bytes)
        let otherSize = try other.size()
        #expect(otherSize == 0)
        #expect(try TestSupport.referenceRead(second, count: 8192) == [])
    }

    @Test func callerMemoryInsideARegisteredBufferAndBounceBuffersUseFixedOpcodes() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let reference = TestSupport.pattern(count: 65536, seed: 17)
        try TestSupport.referenceWrite(path, reference)
        let engine = try TestSupport.ringEngine()
        let pool = try BufferPool(count: 2, bufferBytes: 65536)
        let registered = TestSupport.registered(engine.registering(pool))
        let file = try DirectFile(path: path, engine: engine)
        guard let buffer = pool.take() else { Issue.record("pool empty"); return }
        // Raw memory that lies inside a registered buffer: READ_FIXED, found by address.
        let raw = UnsafeMutableRawBufferPointer(start: buffer.baseAddress + 4096, count: 8192)
        #expect(try file.read(into: raw, at: 8192) == 8192)
        #expect(Array(raw) == Array(reference[8192..<16384]))
        // Unregistered (RLIMIT_MEMLOCK), the same read must not name a fixed buffer.
        #expect(engine.statistics.fixedBufferRequests == (registered ? 1 : 0))
        // An unaligned read whose one device I/O is a bounce piece: READ_FIXED on the
        // (registered) bounce buffer.
        var small = [UInt8](repeating: 0, count: 10)
        #expect(try file.read(into: &small, at: 3) == 10)
        #expect(small == Array(reference[3..<13]))
        // The reserve is registered only where pinning uses no RLIMIT_MEMLOCK.
        let reserve = engine.smallBouncePool ?? engine.bouncePool  // a 10-byte read's covering block fits a small buffer
        let bounceRegistered = MemoryLimits.pinningIsFree ? TestSupport.registered(reserve.registration) : false
        if !MemoryLimits.pinningIsFree { #expect(reserve.registration == .unregistered) }
        #expect(engine.statistics.fixedBufferRequests == (registered ? 1 : 0) + (bounceRegistered ? 1 : 0))
        _ = consume buffer
    }

    /// Pinned pages of this process (VmPin in /proc/self/status), in bytes.
    private static func pinnedBytes() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmPin:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    @Test func aPoolRegisteredWithARuntimeIsPinnedOnceForAllItsRings() async throws {
        // VmPin counts the whole process's pinned pages, and other tests pin and unpin pools
        // meanwhile: the measurement runs alone, in a second process of this test bundle.
        guard ProcessInfo.processInfo.environment["DIRECTIO_TEST_ALONE"] != nil else {
            let (status, output) = try TestSupport.runThisBundle(filter: "aPoolRegisteredWithARuntimeIsPinnedOnce", environment: ["DIRECTIO_TEST_ALONE": "1"])
            #expect(status == 0, "\(output.suffix(3000))")
            #expect(output.contains("aPoolRegisteredWithARuntimeIsPinnedOnceForAllItsRings() passed"), "\(output.suffix(2000))")
            return
        }
        let runtime = try IORuntime(rings: 3, queueDepth: 16)
        guard runtime.usesIOUring, !TestSupport.memlockBinds else {
            print("skipped: needs io_uring rings and no binding RLIMIT_MEMLOCK")
            await runtime.shutdown()
            return
        }
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: 64 * 65536, seed: 77)
        try TestSupport.referenceWrite(path, bytes)
        // 96 MiB: other tests' pools, pinned meanwhile, stay far below the margin allowed.
        let pool = try BufferPool(count: 1536, bufferBytes: 65536)
        let before = Self.pinnedBytes()
        await runtime.register(pool)
        let pinned = Self.pinnedBytes() - before
        let statistics = await runtime.ringStatistics()
        if statistics.allSatisfy({ $0.poolsShared >= 1 }) {
            // Three rings, one pinning: about 96 MiB, not 288.
            #expect(pinned >= 90 << 20 && pinned < 144 << 20, "pinned \(pinned >> 20) MiB for a 96 MiB pool on 3 rings")
        } else {
            // A kernel without IORING_REGISTER_CLONE_BUFFERS (before 6.13): each ring pins.
            print("kernel cannot share registered buffers between rings: pinned \(pinned >> 20) MiB")
        }
        // Every ring reads into the pool with READ_FIXED, byte-exact.
        let file = try AsyncFile(path: path, runtime: runtime)
        for ring in 0..<3 {
            let wrong = await withTaskExecutorPreference(runtime.executor(ring: ring)) { () async -> Int in
                var wrong = 0
                for block in stride(from: ring, to: 64, by: 3) {
                    guard var buffer = pool.take() else { return -1 }
                    let count = (try? await file.read(into: &buffer, at: Int64(block * 65536))) ?? 0
                    if count != 65536 || buffer.bytes() != Array(bytes[block * 65536..<(block + 1) * 65536]) { wrong += 1 }
                }
                return wrong
            }
            #expect(wrong == 0, "ring \(ring)")
        }
        let after = await runtime.ringStatistics()
        #expect(after.allSatisfy { $0.fixedBufferRequests > 0 }, "\(after.map(\.fixedBufferRequests))")
        await runtime.shutdown()
    }

    @Test func hugePagePoolsWorkAndSayWhatTheyGot() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let pool = try BufferPool(count: 4, bufferBytes: 1 << 20, hugePages: .preferred)
        // Either hugetlb pages were reserved, or the fallback is reported.
        #expect(pool.mapping.hugePages != .none)
        if pool.mapping.hugePages == .transparent {
            #expect(pool.mapping.notes.contains { $0.contains("MAP_HUGETLB refused") })
        }
        #expect(pool.mapping.mappedBytes % MappedRegion.hugePageBytes == 0)
        let engine = try TestSupport.ringEngine()
        let first = UInt16(MemoryLimits.pinningIsFree ? engine.bouncePool.count + (engine.smallBouncePool?.count ?? 0) : 0)  // after the bounce reserve
        if TestSupport.registered(engine.registering(pool)) { #expect(pool.registration == .registered(firstSlot: first)) }
        let file = try DirectFile(path: path, options: OpenOptions(create: true), engine: engine)
        guard var buffer = pool.take() else { Issue.record("pool empty"); return }
        let bytes = TestSupport.pattern(count: 1 << 20, seed: 14)
        buffer.copy(from: bytes)
        let written = try file.write(buffer, at: 0)
        #expect(written == 1 << 20)
        #expect(try TestSupport.referenceRead(path, count: 1 << 20) == bytes)
    }

    @Test func spansReachTheSameBytesTheKernelWrote() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let reference = TestSupport.pattern(count: 8192, seed: 15)
        try TestSupport.referenceWrite(path, reference)
        let file = try DirectFile(path: path)
        var buffer = try AlignedBuffer(byteCount: 8192)
        buffer.withMutableBytes { span in
            for index in 0..<span.byteCount { span.storeBytes(of: 0, toByteOffset: index, as: UInt8.self) }
        }
        _ = try file.read(into: &buffer, at: 0)
        let sum = buffer.withBytes { span in
            var total = 0
            for index in 0..<span.byteCount { total += Int(span.unsafeLoad(fromByteOffset: index, as: UInt8.self)) }
            return total
        }
        #expect(sum == reference.reduce(0) { $0 + Int($1) })
        #expect(buffer.report.locked || (TestSupport.memlockBinds && buffer.report.description.contains("RLIMIT_MEMLOCK")))
    }

    @Test func poolBuffersComeBackWhenDroppedAndPoolsNeverShrink() throws {
        let pool = try BufferPool(count: 3, bufferBytes: 1000)
        #expect(pool.bufferBytes == Sys.pageSize)  // rounded up so every buffer is page-aligned
        do {
            guard let a = pool.take(), let b = pool.take(), let c = pool.take() else {
                Issue.record("a 3-buffer pool gave fewer than 3")
                return
            }
            var fourth = false
            if let _ = pool.take() { fourth = true }
            #expect(!fourth)
            #expect(pool.available == 0)
            for address in [a.baseAddress, b.baseAddress, c.baseAddress] {
                #expect(Int(bitPattern: address) % Sys.pageSize == 0)
            }
        }
        #expect(pool.available == 3)
        let blocking = try IOEngine(.blocking)
        let refused = blocking.registering(pool)
        #expect(refused == .refused("the blocking engine has no fixed buffers"))
        #expect(pool.description.contains("not registered"))
        #expect(pool.count == 3)
    }
}

import MetricsTestKit

@Suite struct MetricsTests {
    @Test func engineStatisticsReachSwiftMetricsAsDeltas() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let metrics = TestMetrics()
        let engine = try TestSupport.ringEngine()
        let file = try DirectFile(path: directory + "/data", options: OpenOptions(create: true), engine: engine)
        #expect(try file.write([UInt8](repeating: 7, count: 1000), at: 100) == 1000)
        engine.publishMetrics(label: "test", factory: metrics)
        let bounced = try metrics.expectCounter("directio.bytes", [("engine", "test"), ("path", "bounced")])
        #expect(bounced.totalValue == Int64(engine.statistics.transfers.bytesBounced))
        #expect(bounced.totalValue > 0)
        // A second publish adds only what changed since the first.
        #expect(try file.write([UInt8](repeating: 8, count: 1000), at: 5000) == 1000)
        engine.publishMetrics(label: "test", factory: metrics)
        engine.publishMetrics(label: "test", factory: metrics)
        #expect(bounced.totalValue == Int64(engine.statistics.transfers.bytesBounced))
        let submitted = try metrics.expectCounter("directio.requests", [("engine", "test"), ("event", "submitted")])
        #expect(submitted.totalValue == Int64(engine.statistics.submitted))
        let direct = try metrics.expectCounter("directio.bytes", [("engine", "test"), ("path", "direct")])
        #expect(direct.totalValue == Int64(engine.statistics.transfers.bytesDirect))
    }
}
