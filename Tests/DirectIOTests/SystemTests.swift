import CDirectIO
import Foundation
import Glibc
import Testing
@testable import DirectIO

/// Tests that need root: loop devices, mounts, sysctls and child processes with reduced
/// capabilities. Serialized, and every device and mount is released on every path.
@Suite(.serialized, .enabled(if: TestSupport.isRoot, "needs root: loop devices, mounts and sysctls"))
struct SystemTests {
    // MARK: Independent sources of truth

    /// statx as the kernel reports it, read directly (not through DeviceLimits).
    private func rawStatx(_ path: String) throws -> dio_statx {
        var stx = dio_statx()
        let result = dio_statx(AT_FDCWD, path, 0, UInt32(STATX_DIOALIGN | STATX_DIO_READ_ALIGN), &stx)
        try #require(result == 0, "statx \(path): errno \(errno)")
        return stx
    }

    private func sysfs(_ device: String, _ attribute: String) throws -> Int {
        let text = try String(contentsOfFile: "/sys/block/\(device)/queue/\(attribute)", encoding: .utf8)
        return try #require(Int(text.trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    private func inspect(_ path: String, prefix: [String] = [], extra: [String] = [], environment: [String: String]? = nil) throws -> [String: Any] {
        let result = try TestSupport.run(prefix + [TestSupport.dioExecutable, "inspect", "--json", path] + extra, environment: environment)
        try #require(result.status == 0, "dio inspect \(path) failed: \(result.error)")
        return try TestSupport.json(result.output)
    }

    /// Checks `json` (from `dio inspect --json`) against statx and sysfs read independently.
    private func expectMatchesKernel(_ json: [String: Any], statxOf path: String, disk: String?) throws {
        let stx = try rawStatx(path)
        #expect(stx.stx_mask & UInt32(STATX_DIOALIGN) != 0)
        #expect(json["memoryAlignment"] as? Int == Int(stx.stx_dio_mem_align))
        #expect(json["offsetAlignment"] as? Int == Int(stx.stx_dio_offset_align))
        let readAlign = stx.stx_mask & STATX_DIO_READ_ALIGN != 0 && stx.stx_dio_read_offset_align != 0 ? Int(stx.stx_dio_read_offset_align) : Int(stx.stx_dio_offset_align)
        #expect(json["readOffsetAlignment"] as? Int == readAlign)
        if let disk {
            #expect(json["deviceName"] as? String == disk)
            #expect(json["logicalBlockSize"] as? Int == (try sysfs(disk, "logical_block_size")))
            #expect(json["physicalBlockSize"] as? Int == (try sysfs(disk, "physical_block_size")))
            #expect(json["maxIOBytes"] as? Int == (try sysfs(disk, "max_sectors_kb")) * 1024)
            #expect(json["maxSegments"] as? Int == (try sysfs(disk, "max_segments")))
            #expect(json["maxSegmentBytes"] as? Int == (try sysfs(disk, "max_segment_size")))
            #expect(json["dmaAlignment"] as? Int == (try sysfs(disk, "dma_alignment")))
        }
        for key in ["path", "filesystem", "device", "directIO", "memoryAlignment", "offsetAlignment", "readOffsetAlignment",
                    "logicalBlockSize", "physicalBlockSize", "maxIOBytes", "maxSegments", "maxSegmentBytes", "ioUring", "memlockLimitBytes"] {
            #expect(json.keys.contains(key), "missing key \(key)")
        }
    }

    /// Writes and reads back through DirectFile, compared with pread on a buffered descriptor.
    private func roundTrip(_ path: String, blockBytes: Int, options: OpenOptions = OpenOptions(create: true), seed: UInt64) throws {
        for config in EngineTests.engines {
            let engine = try config.make()
            let pool = try BufferPool(count: 2, bufferBytes: 65536)
            engine.register(pool)
            let file = try DirectFile(path: path, options: options, engine: engine)
            guard var buffer = pool.take() else { Issue.record("pool empty"); return }
            let bytes = TestSupport.pattern(count: 65536, seed: seed)
            buffer.copy(from: bytes)
            let offset = Int64(blockBytes * 3)
            let written = try file.write(buffer, at: offset)
            #expect(written == 65536)
            try file.sync(dataOnly: true)
            #expect(try TestSupport.referenceRead(path, count: 65536, at: offset) == bytes)
            guard var readBack = pool.take() else { Issue.record("pool empty"); return }
            let read = try file.read(into: &readBack, at: offset)
            #expect(read == 65536)
            #expect(readBack.bytes() == bytes)
        }
    }

    // MARK: Filesystems and devices

    @Test func ext4FileLimitsEqualStatxAndSysfs() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, TestSupport.pattern(count: 8192, seed: 1))
        let json = try inspect(path)
        #expect(json["filesystem"] as? String == "ext4")
        #expect(json["directIO"] as? Bool == true)
        #expect(json["ioUring"] as? Bool == true)
        let disk = json["deviceName"] as? String
        try expectMatchesKernel(json, statxOf: path, disk: disk)
        // The directory answers for a new file in it, with the same limits.
        let forDirectory = try inspect(directory)
        #expect(forDirectory["offsetAlignment"] as? Int == json["offsetAlignment"] as? Int)
        #expect(forDirectory["memoryAlignment"] as? Int == json["memoryAlignment"] as? Int)
        // The probe's temporary file left nothing behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["data"])
        try roundTrip(path, blockBytes: 4096, seed: 2)
    }

    @Test func tmpfsHasNoStatxAlignmentSoTheProbeFindsIt() throws {
        let directory = "/dev/shm/directio-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { TestSupport.remove(directory) }
        let path = directory + "/data"
        try TestSupport.referenceWrite(path, TestSupport.pattern(count: 8192, seed: 3))
        let stx = try rawStatx(path)
        let json = try inspect(path)
        #expect(json["filesystem"] as? String == "tmpfs")
        #expect(json["directIO"] as? Bool == true)
        if stx.stx_mask & UInt32(STATX_DIOALIGN) == 0 || stx.stx_dio_offset_align == 0 {
            // tmpfs serves O_DIRECT from the page cache: any alignment works, and the probe says so.
            #expect(json["alignmentSource"] as? String == "probe")
            #expect(json["memoryAlignment"] as? Int == 1)
            #expect(json["offsetAlignment"] as? Int == 1)
        } else {
            try expectMatchesKernel(json, statxOf: path, disk: nil)
        }
        #expect(json["logicalBlockSize"] is NSNull)
        #expect(json["maxIOBytes"] is NSNull)
        try roundTrip(path, blockBytes: 1, seed: 4)
    }

    @Test func fourKiBSectorLoopDeviceReportsItsLimitsAndRefuses512ByteOffsets() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let device = try LoopDevice.attach(megabytes: 64, sectorSize: 4096, in: directory)
        defer { device.detach() }
        let disk = String(device.path.dropFirst("/dev/".count))
        let json = try inspect(device.path)
        #expect(json["filesystem"] as? String == "block device")
        #expect(json["blockDevice"] as? Bool == true)
        #expect(json["directIO"] as? Bool == true)
        #expect(json["logicalBlockSize"] as? Int == 4096)
        #expect(json["offsetAlignment"] as? Int == 4096)
        try expectMatchesKernel(json, statxOf: device.path, disk: disk)

        try roundTrip(device.path, blockBytes: 4096, options: OpenOptions(), seed: 5)
        let file = try DirectFile(path: device.path)
        #expect(try file.size() == 64 << 20)
        var buffer = try AlignedBuffer(byteCount: 8192)
        let error = #expect(throws: DirectIOError.self) { _ = try file.read(into: &buffer, count: 4096, at: 512) }
        #expect(error?.code == .misaligned)
        #expect(error?.detail?.contains("offset alignment 4096") == true)
        let lengthError = #expect(throws: DirectIOError.self) { _ = try file.write(buffer, count: 512, at: 4096) }
        #expect(lengthError?.detail?.contains("length 512") == true)
    }

    @Test(.enabled(if: TestSupport.kernelHasMSDOSPartitions, "this kernel has no CONFIG_MSDOS_PARTITION, so loop devices get no partitions (QueueLimitsTests covers the resolution on a fake sysfs)"))
    func aPartitionReportsItsDisksQueueLimits() throws {
        // An MBR with one partition from sector 2048, written by hand (no partitioning tool
        // needed); `losetup --partscan` then creates /dev/loopNp1, whose queue is loopN's.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let image = directory + "/disk.img"
        var mbr = [UInt8](repeating: 0, count: 512)
        let entry = 446
        mbr[entry + 4] = 0x83  // Linux
        let start: UInt32 = 2048, sectors: UInt32 = 30 * 2048
        for byte in 0..<4 {
            mbr[entry + 8 + byte] = UInt8(truncatingIfNeeded: start >> (8 * UInt32(byte)))
            mbr[entry + 12 + byte] = UInt8(truncatingIfNeeded: sectors >> (8 * UInt32(byte)))
        }
        mbr[510] = 0x55
        mbr[511] = 0xAA
        try TestSupport.referenceWrite(image, mbr)
        try #require(truncate(image, 32 << 20) == 0)
        let attach = try TestSupport.run(["losetup", "--find", "--show", "--partscan", image])
        try #require(attach.status == 0, "losetup: \(attach.error)")
        let disk = attach.output.trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? TestSupport.run(["losetup", "-d", disk]) }
        let partition = disk + "p1"
        var waited = 0
        while access(partition, F_OK) != 0 && waited < 100 { usleep(20_000); waited += 1 }
        try #require(access(partition, F_OK) == 0, "\(partition) did not appear")
        let json = try inspect(partition)
        #expect(json["blockDevice"] as? Bool == true)
        #expect(json["deviceName"] as? String == String(disk.dropFirst("/dev/".count)))
        #expect(json["maxSegments"] as? Int == (try sysfs(String(disk.dropFirst("/dev/".count)), "max_segments")))
        try roundTrip(partition, blockBytes: 512, options: OpenOptions(), seed: 16)
        #expect(try TestSupport.referenceRead(image, count: 512) == mbr)
    }

    @Test(.enabled(if: TestSupport.which("mkfs.xfs") != nil, "mkfs.xfs not installed (apt-get install xfsprogs)"))
    func xfsOnLoopLimitsEqualStatxAndSysfs() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let filesystem = try MountedFilesystem.make("xfs", megabytes: 320, sectorSize: 4096, in: directory)
        defer { filesystem.unmount() }
        let path = filesystem.mountPoint + "/data"
        try TestSupport.referenceWrite(path, TestSupport.pattern(count: 65536, seed: 6))
        let json = try inspect(path)
        #expect(json["filesystem"] as? String == "xfs")
        #expect(json["directIO"] as? Bool == true)
        #expect(json["offsetAlignment"] as? Int == 4096)
        try expectMatchesKernel(json, statxOf: path, disk: String(filesystem.device.path.dropFirst("/dev/".count)))
        try roundTrip(path, blockBytes: 4096, seed: 7)
    }

    @Test func unalignedRequestsOnAFourKiBSectorDeviceAndXfsAreByteExact() async throws {
        // 4 KiB logical sectors: every offset or length off 4096 goes through read-modify-write.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let device = try LoopDevice.attach(megabytes: 8, sectorSize: 4096, in: directory)
        defer { device.detach() }
        for (index, config) in EngineTests.engines.enumerated() {
            try BounceWorkload.run(path: device.path, engine: config.make(), operations: 150, span: 1 << 20, seed: 50 + UInt64(index), fixedSize: 8 << 20)
        }
        for (index, engine) in AsyncTests.engines.enumerated() {
            let runtime = try IORuntime(rings: 2, queueDepth: 16, engine: engine)
            try await BounceWorkload.run(path: device.path, runtime: runtime, operations: 150, span: 1 << 20, seed: 150 + UInt64(index), fixedSize: 8 << 20)
        }
        // Batched: unaligned writes as steps of one request, many in flight (the whole device).
        _ = try BatchedRealignTests.run(path: device.path, engine: EngineTests.engines[0].make(queueDepth: 32), rounds: 10, perRound: 16, seed: 170, fileBytes: 8 << 20)
        guard TestSupport.which("mkfs.xfs") != nil else {
            print("skipping the xfs half: mkfs.xfs not installed (apt-get install xfsprogs)")
            return
        }
        let filesystem = try MountedFilesystem.make("xfs", megabytes: 320, sectorSize: 4096, in: directory)
        defer { filesystem.unmount() }
        for (index, config) in EngineTests.engines.enumerated() {
            try BounceWorkload.run(path: filesystem.mountPoint + "/data\(index)", engine: config.make(), operations: 150, span: 300_000, seed: 60 + UInt64(index))
        }
        for (index, engine) in AsyncTests.engines.enumerated() {
            let runtime = try IORuntime(rings: 2, queueDepth: 16, engine: engine)
            try await BounceWorkload.run(path: filesystem.mountPoint + "/async\(index)", runtime: runtime, operations: 150, span: 300_000, seed: 160 + UInt64(index))
        }
        _ = try BatchedRealignTests.run(path: filesystem.mountPoint + "/batched", engine: EngineTests.engines[0].make(queueDepth: 32), rounds: 10, perRound: 16, seed: 171)
    }

    @Test func verifyPassesOnAFourKiBSectorDeviceWithMisalignedMemoryAndOffsets() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let device = try LoopDevice.attach(megabytes: 16, sectorSize: 4096, in: directory)
        defer { device.detach() }
        for extra in [["--buffer-offset", "512"], ["--buffer-offset", "8", "--offset-jitter", "1000", "--bs", "12k"]] {
            let result = try TestSupport.run([TestSupport.dioExecutable, "verify", device.path, "--size", "16m", "--json"] + extra)
            #expect(result.status == 0, "\(extra): \(result.error)")
            let json = try TestSupport.json(result.output)
            #expect(json["mismatches"] as? Int == 0)
            #expect((json["bytesVerified"] as? Int ?? 0) > 15 << 20)
        }
    }

    @Test(.enabled(if: TestSupport.which("mkfs.ext4") != nil, "mkfs.ext4 not installed (e2fsprogs)"))
    func runningOutOfSpaceNamesTheOffsetAndKeepsEarlierData() throws {
        // RELIABILITY-CASES: ENOSPC on a small filesystem. The error carries the offset;
        // everything written before it reads back intact.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let filesystem = try MountedFilesystem.make("ext4", megabytes: 16, in: directory)
        defer { filesystem.unmount() }
        let mountPoint = filesystem.mountPoint
        let path = mountPoint + "/fill"
        for config in EngineTests.engines {
            unlink(path)
            let file = try DirectFile(path: path, options: OpenOptions(create: true), engine: config.make())
            var buffer = try AlignedBuffer(byteCount: 1 << 20)
            var written: [UInt8] = []
            var failure: DirectIOError? = nil
            for block in 0..<64 {
                let bytes = TestSupport.pattern(count: 1 << 20, seed: UInt64(block))
                buffer.copy(from: bytes)
                do {
                    let count = try file.write(buffer, at: Int64(block) << 20)
                    written += bytes.prefix(count)
                    if count < 1 << 20 { break }
                } catch {
                    failure = error
                    break
                }
            }
            let error = try #require(failure, "16 MiB filesystem took 64 MiB")
            #expect(error.code == .noSpace)
            #expect(error.path == path)
            #expect(error.offset != nil && (error.offset ?? 0) >= Int64(written.count))
            TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: written.count), written, "data written before ENOSPC")
        }
    }

    @Test func filesystemWithoutODirectFailsRequiredAndFallsBackForPreferred() throws {
        // ramfs has no direct I/O at all: open(O_DIRECT) fails with EINVAL.
        let directory = try TestSupport.scratchDirectory()
        let mountPoint = directory + "/ramfs"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mounted = try TestSupport.run(["mount", "-t", "ramfs", "ramfs", mountPoint])
        try #require(mounted.status == 0, "mount ramfs: \(mounted.error)")
        defer {
            _ = try? TestSupport.run(["umount", mountPoint])
            TestSupport.remove(directory)
        }
        let path = mountPoint + "/data"
        let error = #expect(throws: DirectIOError.self) {
            _ = try DirectFile(path: path, options: OpenOptions(directIO: .required, create: true))
        }
        #expect(error?.code == .directIOUnsupported)
        #expect(error?.detail?.contains("ramfs") == true)
        // Nothing was left behind by the failed open.
        #expect(access(path, F_OK) != 0)

        let logs = CapturedLogs()
        let engine = try IOEngine(logger: logs.logger())
        let file = try DirectFile(path: path, options: OpenOptions(directIO: .preferred, create: true), engine: engine)
        let isDirect = file.isDirect
        #expect(!isDirect)
        // Said once, at info, with the file and the reason.
        let said = logs.matching("direct I/O refused")
        #expect(said.count == 1 && said.first?.level == .info && said.first?.metadata["directio.path"] == path && said.first?.metadata["directio.reason"]?.contains("ramfs") == true, "\(said)")
        #expect(engine.statistics.bufferedFallbacks == 1)
        #expect(file.fallbackNote?.contains("ramfs") == true)
        let bytes = TestSupport.pattern(count: 10000, seed: 8)
        let written = try bytes.withUnsafeBytes { raw in try file.write(raw, at: 123) }
        #expect(written == 10000)
        #expect(try TestSupport.referenceRead(path, count: 20000) == [UInt8](repeating: 0, count: 123) + bytes)
        let json = try inspect(path)
        #expect(json["directIO"] as? Bool == false)
    }

    // MARK: Process limits

    @Test(.enabled(if: TestSupport.which("setpriv") != nil && TestSupport.which("prlimit") != nil, "needs setpriv and prlimit (util-linux)"))
    func tinyMemlockLimitLeavesThePoolFullSizeUnlockedAndUnregistered() throws {
        // Root has CAP_IPC_LOCK, which ignores RLIMIT_MEMLOCK: drop it, then set 64 KiB.
        let json = try inspect("/tmp", prefix: ["setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock", "--", "prlimit", "--memlock=65536:65536"], extra: ["--pool-bytes", "1m"])
        #expect(json["memlockLimitBytes"] as? Int == 65536)
        let pool = try #require(json["pool"] as? [String: Any])
        #expect(pool["bytes"] as? Int == 1 << 20)
        #expect(pool["locked"] as? Bool == false)
        #expect(pool["registered"] as? Bool == false)
        let notes = (pool["notes"] as? [String]) ?? []
        #expect(notes.contains { $0.contains("mlock refused") && $0.contains("RLIMIT_MEMLOCK is 64 KiB") })
        #expect(notes.contains { $0.contains("not registered") && $0.contains("RLIMIT_MEMLOCK") })

        // With the limit raised past the pool, the same pool is locked and registered.
        let roomy = try inspect("/tmp", prefix: ["setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock", "--", "prlimit", "--memlock=8388608:8388608"], extra: ["--pool-bytes", "1m"])
        let roomyPool = try #require(roomy["pool"] as? [String: Any])
        #expect(roomyPool["locked"] as? Bool == true)
        #expect(roomyPool["registered"] as? Bool == true)
    }

    @Test(.enabled(if: TestSupport.which("setpriv") != nil && access("/proc/sys/kernel/io_uring_disabled", W_OK) == 0, "needs setpriv and a writable kernel.io_uring_disabled"))
    func ioUringRefusedByTheKernelFallsBackToTheBlockingEngine() throws {
        // kernel.io_uring_disabled=1 refuses io_uring_setup with EPERM to processes without
        // CAP_SYS_ADMIN outside io_uring_group; this test process keeps the capability, so
        // tests running beside it are unaffected.
        let sysctl = "/proc/sys/kernel/io_uring_disabled"
        let previous = try String(contentsOfFile: sysctl, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try "1".write(toFile: sysctl, atomically: false, encoding: .utf8)
        defer { try? previous.write(toFile: sysctl, atomically: false, encoding: .utf8) }
        let json = try inspect("/tmp", prefix: ["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", "--"], environment: ["DIRECTIO_ENGINE": ""])
        #expect(json["ioUring"] as? Bool == false)
        #expect(json["engine"] as? String == "blocking")
        let notes = (json["engineNotes"] as? [String]) ?? []
        #expect(notes.contains { $0.contains("io_uring unavailable") && $0.contains("permission denied") })
    }
}
