import CDirectIO
import Foundation
import Glibc
import Testing
@testable import DirectIO

/// Untorn (RWF_ATOMIC) writes: xfs over a 4 KiB-sector loop device takes them (4 KiB to
/// 1 MiB on this kernel, above the device's unit in software); ext4 on the virtio disk has
/// none. Every refusal happens before anything reaches the kernel.
extension SystemTests {
    @Test(.enabled(if: TestSupport.which("mkfs.xfs") != nil, "mkfs.xfs not installed (apt-get install xfsprogs)"))
    func atomicWritesOnXfsLandByteExactAndBadOnesAreRefusedFirst() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let filesystem = try MountedFilesystem.make("xfs", megabytes: 320, sectorSize: 4096, in: directory)
        defer { filesystem.unmount() }
        let path = filesystem.mountPoint + "/table"
        let fileBytes = 4 << 20
        var model = TestSupport.pattern(count: fileBytes, seed: 80)
        try TestSupport.referenceWrite(path, model)

        // The limits are statx's, read independently here.
        var stx = dio_statx()
        try #require(dio_statx(AT_FDCWD, path, 0, STATX_WRITE_ATOMIC, &stx) == 0)
        try #require(stx.stx_mask & STATX_WRITE_ATOMIC != 0 && stx.stx_atomic_write_unit_max > 0, "this xfs reports no atomic writes")
        let json = try TestSupport.json(try TestSupport.run([TestSupport.dioExecutable, "inspect", "--json", path]).output)
        #expect(json["atomicWriteUnitMin"] as? Int == Int(stx.stx_atomic_write_unit_min))
        #expect(json["atomicWriteUnitMax"] as? Int == Int(stx.stx_atomic_write_unit_max))
        #expect(json["atomicWriteSegmentsMax"] as? Int == Int(max(stx.stx_atomic_write_segments_max, 1)))
        let unitMin = Int(stx.stx_atomic_write_unit_min), unitMax = Int(stx.stx_atomic_write_unit_max)

        var seed: UInt64 = 81
        for config in EngineTests.engines {
            let engine = try config.make()
            let pool = try BufferPool(count: 2, bufferBytes: unitMax)
            engine.register(pool)
            let file = try DirectFile(path: path, options: OpenOptions(access: .readWrite), engine: engine)
            // Every power of two between the units, at a naturally aligned offset.
            var length = unitMin
            while length <= unitMax {
                guard var buffer = pool.take() else { Issue.record("pool empty"); return }
                let bytes = TestSupport.pattern(count: length, seed: seed)
                seed += 1
                buffer.copy(from: bytes)
                let offset = Int64(length) * Int64(Int(seed) % (fileBytes / length))
                #expect(try file.atomicWrite(buffer, count: length, at: offset) == length)
                model.replaceSubrange(Int(offset)..<Int(offset) + length, with: bytes)
                length *= 2
            }
            // Caller memory, and the batched form.
            let aligned = try AlignedBuffer(byteCount: 16384)
            let bytes = TestSupport.pattern(count: 16384, seed: seed)
            seed += 1
            bytes.withUnsafeBytes { aligned.baseAddress.copyMemory(from: $0.baseAddress!, byteCount: 16384) }
            #expect(try file.atomicWrite(UnsafeRawBufferPointer(start: aligned.baseAddress, count: 16384), at: 32768) == 16384)
            model.replaceSubrange(32768..<49152, with: bytes)
            guard var batched = pool.take() else { Issue.record("pool empty"); return }
            let batchBytes = TestSupport.pattern(count: 8192, seed: seed)
            seed += 1
            batched.copy(from: batchBytes)
            try file.submitAtomicWrite(batched, count: 8192, at: 1 << 20, tag: 9)
            var outcome: IOOutcome?
            try engine.reap(minimum: 1) { completion in outcome = completion.outcome }
            #expect(outcome?.bytes == 8192 && outcome?.errno == nil)
            model.replaceSubrange((1 << 20)..<((1 << 20) + 8192), with: batchBytes)
            #expect(try TestSupport.referenceRead(path, count: fileBytes) == model, "\(config)")

            // Refused before submission: nothing completes, nothing changes.
            let before = engine.statistics.completions
            guard let spare = pool.take() else { Issue.record("pool empty"); return }
            let cases: [(String, DirectIOError.Code, () throws(DirectIOError) -> Int)] = [
                ("not a power of two", .invalidArgument, { () throws(DirectIOError) in try file.atomicWrite(spare, count: 12288, at: 0) }),
                ("below the unit", .invalidArgument, { () throws(DirectIOError) in try file.atomicWrite(spare, count: unitMin / 2, at: 0) }),
                ("not naturally aligned", .misaligned, { () throws(DirectIOError) in try file.atomicWrite(spare, count: 8192, at: 4096) }),
                ("misaligned memory", .misaligned, { () throws(DirectIOError) in
                    try file.atomicWrite(UnsafeRawBufferPointer(start: aligned.baseAddress + 8, count: 4096), at: 0) }),
                ("negative offset", .invalidArgument, { () throws(DirectIOError) in try file.atomicWrite(spare, count: 4096, at: -4096) }),
            ]
            for (name, code, attempt) in cases {
                do {
                    _ = try attempt()
                    Issue.record("\(name): the atomic write was not refused")
                } catch {
                    #expect(error.code == code, "\(name): \(error)")
                    #expect(error.description.contains("nothing was written"), "\(name): \(error)")
                }
            }
            #expect(engine.statistics.completions == before)
            #expect(try TestSupport.referenceRead(path, count: fileBytes) == model)
        }

        // From a task, through each async engine.
        for engine in AsyncTests.engines {
            let runtime = try IORuntime(rings: 1, queueDepth: 8, engine: engine)
            let file = try AsyncFile(path: path, runtime: runtime)
            let aligned = try AlignedBuffer(byteCount: 65536)
            let bytes = TestSupport.pattern(count: 65536, seed: seed)
            seed += 1
            bytes.withUnsafeBytes { aligned.baseAddress.copyMemory(from: $0.baseAddress!, byteCount: 65536) }
            #expect(try await file.atomicWrite(UnsafeRawBufferPointer(start: aligned.baseAddress, count: 65536), at: 2 << 20) == 65536)
            model.replaceSubrange((2 << 20)..<((2 << 20) + 65536), with: bytes)
            await #expect(throws: DirectIOError.self) { _ = try await file.atomicWrite(UnsafeRawBufferPointer(start: aligned.baseAddress, count: 65536), at: 4096) }
            #expect(try TestSupport.referenceRead(path, count: fileBytes) == model)
            await runtime.shutdown()
        }
    }

    @Test func atomicWritesOnAFileWithoutSupportAreRefusedNamingIt() throws {
        // The scratch directory is on ext4 over the virtio disk, which reports no atomic writes.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        let bytes = TestSupport.pattern(count: 65536, seed: 90)
        try TestSupport.referenceWrite(path, bytes)
        let engine = try EngineTests.engines[0].make()
        let file = try DirectFile(path: path, options: OpenOptions(access: .readWrite), engine: engine)
        guard file.limits.atomicWriteUnitMax == nil else {
            print("skipping: \(file.limits.filesystem) here reports atomic writes; the refusal needs a filesystem without them")
            return
        }
        let aligned = try AlignedBuffer(byteCount: 4096)
        do {
            _ = try file.atomicWrite(UnsafeRawBufferPointer(start: aligned.baseAddress, count: 4096), at: 0)
            Issue.record("an atomic write on \(file.limits.filesystem) without support was not refused")
        } catch {
            #expect(error.code == .unsupported)
            #expect(error.description.contains("no atomic write support"), "\(error)")
            #expect(error.path == path)
        }
        #expect(try TestSupport.referenceRead(path, count: 65536) == bytes)
    }
}
