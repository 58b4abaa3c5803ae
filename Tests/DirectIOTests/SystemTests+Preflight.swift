import CDirectIO
import Foundation
import Glibc
import Testing
@testable import DirectIO
import DIOCommands

/// The pre-flight report against the live machine, btrfs's hidden page-cache copies, and
/// every command under small RLIMIT_MEMLOCK limits. Part of the serialized root suite (mounts,
/// loop devices, child processes with dropped capabilities).
extension SystemTests {
    private func inspectJSON(_ arguments: [String], prefix: [String] = []) throws -> [String: Any] {
        let result = try TestSupport.run(prefix + [TestSupport.dioExecutable, "inspect", "--json"] + arguments)
        try #require(result.status == 0, "dio inspect \(arguments) failed: \(result.error)")
        return try TestSupport.json(result.output)
    }

    private func contents(_ path: String) -> String? {
        try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func theLiveReportMatchesTheKernelsFilesReadDirectly() throws {
        let json = try inspectJSON(["/tmp"])
        let bounce = try #require(json["kernelBounce"] as? [String: Any])
        // The disk's DMA device, found here by walking up from its sysfs directory by hand.
        let device = try #require(json["device"] as? String)
        var directory = try #require(realpath("/sys/dev/block/\(device)", nil).map { pointer in
            defer { free(pointer) }
            return String(cString: pointer)
        })
        var maskBits: Int? = nil
        while directory.count > "/sys/devices".count {
            if let text = contents(directory + "/dma_mask_bits") { maskBits = Int(text); break }
            directory = (directory as NSString).deletingLastPathComponent
        }
        #expect(bounce["dmaMaskBits"] as? Int == maskBits)
        let cmdline = contents("/proc/cmdline") ?? ""
        #expect(bounce["swiotlbForced"] as? Bool == cmdline.split(separator: " ").contains { $0.hasPrefix("swiotlb=") && $0.contains("force") && !$0.contains("noforce") })
        // The highest System RAM address in /proc/iomem (readable by root), one past its end.
        let iomem = contents("/proc/iomem") ?? ""
        let ramEnd = iomem.split(separator: "\n").filter { $0.hasSuffix(": System RAM") && !$0.hasPrefix(" ") }
            .compactMap { line in line.split(separator: "-").dropFirst().first.flatMap { UInt64($0.split(separator: " ")[0], radix: 16) } }.max()
        #expect((bounce["memoryEndAddress"] as? Int).map(UInt64.init) == ramEnd.map { $0 + 1 })
        if let used = contents("/sys/kernel/debug/swiotlb/io_tlb_used") {
            #expect(bounce["swiotlbSlotsUsed"] as? Int == Int(used))
        }
        if maskBits == 64 && !cmdline.contains("swiotlb=force") {
            #expect(bounce["bounces"] as? Bool == false)
        }

        let ring = try #require(json["ioUringAccess"] as? [String: Any])
        #expect(ring["disabled"] as? Int == contents("/proc/sys/kernel/io_uring_disabled").flatMap { Int($0) })
        #expect(ring["group"] as? Int == contents("/proc/sys/kernel/io_uring_group").flatMap { Int($0) })
        let seccomp = (contents("/proc/self/status") ?? "").split(separator: "\n").first { $0.hasPrefix("Seccomp:") }
            .flatMap { Int($0.dropFirst("Seccomp:".count).trimmingCharacters(in: .whitespaces)) }
        #expect(ring["seccompMode"] as? Int == seccomp)
        #expect(ring["available"] as? Bool == true)
        #expect((ring["opcodes"] as? [String])?.contains("READ_FIXED") == true)

        let memory = try #require(json["lockedMemory"] as? [String: Any])
        let shell = try TestSupport.run(["sh", "-c", "ulimit -l"])  // KiB, or "unlimited"
        let limit = shell.output.trimmingCharacters(in: .whitespacesAndNewlines)
        if limit == "unlimited" {
            #expect(memory["limitBytes"] as? String == "unlimited")
        } else {
            #expect(memory["limitBytes"] as? Int == Int(limit).map { $0 * 1024 })
        }
        #expect(memory["capIPCLock"] as? Bool == true)  // root
        #expect(json["findings"] is [Any])
    }

    @Test func aPathThatDoesNotExistIsAClearError() throws {
        let result = try TestSupport.run([TestSupport.dioExecutable, "inspect", "/nonexistent/directio-\(getpid())"])
        #expect(result.status != 0)
        #expect(result.error.contains("inspect failed") && result.error.contains("/nonexistent/directio-"))
        let report = Preflight.check(path: "/nonexistent/directio-\(getpid())", rings: 1)
        #expect(report.limits == nil && report.pathError?.errno == .noSuchFileOrDirectory)
    }

    @Test(.enabled(if: TestSupport.which("mkfs.btrfs") != nil, "mkfs.btrfs not installed (apt-get install btrfs-progs)"))
    func btrfsKeepsMisalignedRequestsOutOfThePageCache() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let filesystem = try MountedFilesystem.make("btrfs", megabytes: 256, in: directory)
        defer { filesystem.unmount() }
        DeviceCache.shared.removeAll()
        let path = filesystem.mountPoint + "/data"
        let size = 1 << 20
        var model = TestSupport.pattern(count: size, seed: 91)
        try TestSupport.referenceWrite(path, model)
        let fd = open(path, O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        func cached() throws -> Int { try Sys.cachedPages(fd, length: size) }
        func dropCache() throws {
            try #require(fsync(fd) == 0)
            try Sys.dropCachedPages(fd)
            try #require(try cached() == 0, "the page cache could not be emptied")
        }

        // The probe saw the kernel's copy and reports the alignment that keeps I/O direct.
        let limits = try DeviceLimits.of(path: path)
        #expect(limits.filesystem == "btrfs")
        #expect(limits.pageCacheServesMisaligned)
        #expect(limits.offsetAlignment == 4096 && limits.memoryAlignment == 4096)
        // btrfs's anonymous device is traced to the loop device its mount names.
        #expect(limits.queue?.deviceName == String(filesystem.device.path.dropFirst("/dev/".count)))
        let json = try inspectJSON([path])
        #expect(json["pageCacheServesMisaligned"] as? Bool == true)
        #expect((json["findings"] as? [[String: Any]])?.contains { ($0["problem"] as? String)?.contains("page cache") == true } == true)

        // The same 200 requests (misaligned memory, offsets and lengths; even steps read, odd
        // ones write), once as raw O_DIRECT calls and once through DirectIO. After each, count
        // whether it left pages in the page cache, then empty it again. btrfs copies every
        // misaligned raw read through the cache; DirectIO sends only 4096-aligned I/O.
        // btrfs also caches the odd aligned O_DIRECT request on its own (a plain C loop of
        // aligned pread/pwrite saw about 1 in 500 here, the first read after mount always),
        // hence a bound rather than zero.
        let arena = try AlignedBuffer(byteCount: 3 * 65536)
        func workload(_ perform: (_ step: Int, _ memory: UnsafeMutableRawBufferPointer, _ offset: Int) throws -> Void) throws -> Int {
            try dropCache()
            var random = SplitMix(seed: 92)
            var cachingSteps = 0
            for step in 0..<200 {
                let offset = Int(random.next() % UInt64(size - 70_000))
                let length = 1 + Int(random.next() % 65_000)
                let memory = UnsafeMutableRawBufferPointer(start: arena.baseAddress + 1 + Int(random.next() % 4095), count: length)
                try perform(step, memory, offset)
                if try cached() > 0 {
                    cachingSteps += 1
                    try dropCache()
                }
            }
            return cachingSteps
        }
        let direct = open(path, O_RDWR | DIO_O_DIRECT)
        try #require(direct >= 0)
        defer { close(direct) }
        let raw = try workload { (step, memory, offset) throws in
            if step % 2 == 0 {
                #expect(pread(direct, memory.baseAddress, memory.count, off_t(offset)) == memory.count, "raw read \(step)")
                #expect(Array(memory) == Array(model[offset..<offset + memory.count]), "raw read \(step) at \(offset)")
            } else {
                for index in 0..<memory.count { memory[index] = UInt8(truncatingIfNeeded: step &* 7 &+ index) }
                #expect(pwrite(direct, memory.baseAddress, memory.count, off_t(offset)) == memory.count, "raw write \(step)")
                model.replaceSubrange(offset..<offset + memory.count, with: memory)
            }
        }
        // Misaligned writes go through the cache too, but btrfs writes those pages back and
        // drops them before returning; the reads' pages stay.
        #expect(raw >= 95, "btrfs no longer serves misaligned O_DIRECT reads through the page cache (\(raw) of 200 requests left pages): the probe's premise changed")

        let file = try DirectFile(path: path, engine: IOEngine())
        let throughDirectIO = try workload { (step, memory, offset) throws in
            if step % 2 == 0 {
                #expect(try file.read(into: memory, at: Int64(offset)) == memory.count)
                #expect(Array(memory) == Array(model[offset..<offset + memory.count]), "read \(step) at \(offset)")
            } else {
                for index in 0..<memory.count { memory[index] = UInt8(truncatingIfNeeded: step &* 31 &+ index) }
                #expect(try file.write(UnsafeRawBufferPointer(memory), at: Int64(offset)) == memory.count)
                model.replaceSubrange(offset..<offset + memory.count, with: memory)
            }
        }
        print("btrfs: raw misaligned O_DIRECT left pages in the page cache after \(raw) of 200 requests, DirectIO after \(throughDirectIO)")
        #expect(throughDirectIO <= 10, "\(throughDirectIO) of 200 DirectIO requests left pages in the page cache (raw misaligned O_DIRECT: \(raw)); limits: \(file.limits)")
        #expect(file.statistics.bytesBounced > 0)
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: size), model, "btrfs after misaligned DirectIO requests")
    }

    @Test(arguments: [0, 64 << 10, 100 << 10, 1 << 20])
    func benchAndVerifyRunUnderAnyMemlockLimit(limit: Int) throws {
        // CAP_IPC_LOCK would lift the limit: drop it, then set one. Before the registration fix,
        // 64 KiB registered half a 32-buffer pool and the bench failed with READ_FIXED: EFAULT;
        // 0 and 100 KiB refused the ring and the bench stopped instead of falling back.
        let prefix = ["setpriv", "--bounding-set", "-ipc_lock", "--inh-caps", "-ipc_lock", "--", "prlimit", "--memlock=\(limit):\(limit)"]
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/bench.dat"
        for api in ["batched", "async"] {
            let bench = try TestSupport.run(prefix + [TestSupport.dioExecutable, "bench", path, "--rw", "randread", "--bs", "4k", "--iodepth", "32",
                                                      "--size", "16m", "--runtime", "0.3", "--ramp", "0", "--api", api, "--json"])
            #expect(bench.status == 0, "bench --api \(api) under a \(limit)-byte memlock limit: \(bench.error)")
            let job = try TestSupport.json(bench.output)
            #expect((job["ios"] as? Int ?? 0) > 0)
            let notes = (job["notes"] as? [String]) ?? []
            if limit < 1 << 20 {
                // The fallback is said, with the limit that caused it.
                #expect(notes.contains { $0.contains("RLIMIT_MEMLOCK") || $0.contains("io_uring unavailable") }, "\(api): \(notes)")
            }
        }
        let verify = try TestSupport.run(prefix + [TestSupport.dioExecutable, "verify", directory + "/verify.dat", "--size", "8m",
                                                   "--buffer-offset", "8", "--offset-jitter", "100", "--json"])
        #expect(verify.status == 0, "verify under a \(limit)-byte memlock limit: \(verify.error)")
        let report = try TestSupport.json(verify.output)
        #expect(report["mismatches"] as? Int == 0)
        #expect((report["bytesVerified"] as? Int ?? 0) > 7 << 20)
        let inspect = try inspectJSON(["/tmp", "--rings", "2", "--pool-bytes", "1m"], prefix: prefix)
        let memory = try #require(inspect["lockedMemory"] as? [String: Any])
        #expect(memory["limitBytes"] as? Int == limit)
        #expect(memory["fits"] as? Bool == false)
        #expect((inspect["findings"] as? [[String: Any]])?.contains { $0["topic"] as? String == "locked memory" } == true)
    }
}
