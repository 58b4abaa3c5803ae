import Foundation
import Testing
@testable import DirectIO

/// The pre-flight readers on fixture trees laid out as the kernel lays out procfs, sysfs and
/// debugfs: each case a machine we do not have (swiotlb forced, a confidential VM, a 32-bit
/// DMA mask, io_uring disabled, seccomp, a tiny memlock limit), plus missing and malformed files.
@Suite struct PreflightTests {
    /// A fixture root: a machine with a virtio disk vda (partition vda1) on PCI 0000:00:02.0
    /// with a 64-bit mask, 25 GiB of memory, a loop device, io_uring allowed, no seccomp, an
    /// 8 MiB memlock limit and no capabilities. Each test changes what its case needs.
    final class Fixture {
        let root: String
        init() throws {
            root = try TestSupport.scratchDirectory("preflight")
            let pci = "/sys/devices/pci0000:00/0000:00:02.0"
            write(pci + "/dma_mask_bits", "64\n")
            write(pci + "/virtio1/block/vda/queue/logical_block_size", "512\n")
            write(pci + "/virtio1/block/vda/vda1/partition", "1\n")
            write("/sys/devices/virtual/block/loop3/queue/logical_block_size", "4096\n")
            link("/sys/dev/block/254:0", "../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda")
            link("/sys/dev/block/254:1", "../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda/vda1")
            link("/sys/dev/block/7:3", "../../devices/virtual/block/loop3")
            link("/sys/class/block/loop3", "../../devices/virtual/block/loop3")
            link("/sys/class/block/vda", "../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda")
            write("/proc/zoneinfo", """
                Node 0, zone      DMA
                  pages free     3840
                        spanned  4095
                        present  3998
                  start_pfn:           1
                Node 0, zone    DMA32
                        spanned  1044480
                  start_pfn:           4096
                Node 0, zone   Normal
                        spanned  5505024
                  start_pfn:           1048576
                Node 0, zone  Movable
                        spanned  0
                """)
            write("/proc/cmdline", "console=ttyS0 quiet swiotlb=noforce\n")
            write("/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae hypervisor lahf_lm\n\n")
            write("/sys/kernel/debug/swiotlb/io_tlb_nslabs", "32768\n")
            write("/sys/kernel/debug/swiotlb/io_tlb_used", "0\n")
            write("/proc/sys/kernel/io_uring_disabled", "0\n")
            write("/proc/sys/kernel/io_uring_group", "-1\n")
            status(seccomp: 0, filters: 0, capEff: "0000000000000000")
            limits(memlock: "8388608")
            write("/proc/self/mountinfo", "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n41 22 0:41 / /mnt/b rw - btrfs /dev/loop3 rw\n")
        }

        deinit { TestSupport.remove(root) }

        func write(_ path: String, _ text: String) {
            let full = root + path
            try? FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: full, contents: Data(text.utf8))
        }

        func remove(_ path: String) { try? FileManager.default.removeItem(atPath: root + path) }

        func link(_ path: String, _ destination: String) {
            let full = root + path
            try? FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try? FileManager.default.createSymbolicLink(atPath: full, withDestinationPath: destination)
        }

        func status(seccomp: Int, filters: Int, capEff: String, groups: String = "0") {
            write("/proc/self/status", "Name:\ttest\nGid:\t1000\t1000\t1000\t1000\nGroups:\t\(groups)\nCapEff:\t\(capEff)\nSeccomp:\t\(seccomp)\nSeccomp_filters:\t\(filters)\n")
        }

        func limits(memlock: String) {
            write("/proc/self/limits", """
                Limit                     Soft Limit           Hard Limit           Units
                Max open files            1024                 4096                 files
                Max locked memory         \(memlock)              \(memlock)              bytes
                """)
        }

        var files: SystemFiles { SystemFiles(root: root) }

        func report(device: String? = "254:1", limits: DeviceLimits? = nil, rings: Int = 2, queueDepth: Int = 128, poolBytes: Int = 0) -> Preflight {
            var limits = limits ?? Self.limits(device: device ?? "0:0")
            if let device { limits.device = device }
            return Preflight(files: files, limits: device == nil ? nil : limits, tryRing: false, rings: rings, queueDepth: queueDepth, poolBytes: poolBytes)
        }

        static func limits(device: String, directIO: Bool = true, pageCache: Bool = false) -> DeviceLimits {
            DeviceLimits(path: "/data", filesystem: "ext4", device: device, isBlockDevice: false, directIO: directIO, directIONote: directIO ? "statx" : "the filesystem refuses O_DIRECT (open: EINVAL)",
                         memoryAlignment: 512, offsetAlignment: pageCache ? 4096 : 512, readOffsetAlignment: 512, alignmentSource: .statx, queue: nil,
                         pageCacheServesMisaligned: pageCache)
        }
    }

    // MARK: Kernel bounce

    @Test func aHealthyMachineHasNoFindings() throws {
        let fixture = try Fixture()
        let report = fixture.report()
        #expect(report.kernelBounce.dmaDevice == "0000:00:02.0")
        #expect(report.kernelBounce.dmaMaskBits == 64)
        #expect(report.kernelBounce.memoryEndAddress == UInt64(1_048_576 + 5_505_024) * UInt64(Sys.pageSize))
        #expect(report.kernelBounce.swiotlbSlots == 32768 && report.kernelBounce.swiotlbSlotsUsed == 0)
        #expect(report.kernelBounce.bounces == false)
        #expect(report.ioUring.disabled == 0 && report.ioUring.seccompMode == 0)
        #expect(report.lockedMemory.limitBytes == 8 << 20 && report.lockedMemory.fits)
        #expect(report.findings.isEmpty, "\(report.findings)")
    }

    @Test func swiotlbForcedOnTheCommandLineBouncesEveryDevice() throws {
        let fixture = try Fixture()
        fixture.write("/proc/cmdline", "quiet swiotlb=65536,force\n")
        fixture.write("/sys/kernel/debug/swiotlb/io_tlb_used", "1200\n")
        let report = fixture.report()
        #expect(report.kernelBounce.swiotlbForced)
        #expect(report.kernelBounce.bounces == true)
        #expect(report.kernelBounce.swiotlbSlotsUsed == 1200)
        let finding = try #require(report.findings.first { $0.topic == "kernel bounce" })
        #expect(finding.problem.contains("swiotlb=force"))
        #expect(finding.consequence.contains("memcpy speed") && finding.consequence.contains("32768 slots"))
        #expect(finding.fix.contains("remove swiotlb=force"))
    }

    @Test func aConfidentialGuestBouncesAllIO() throws {
        let fixture = try Fixture()
        fixture.write("/proc/cpuinfo", "flags\t\t: fpu hypervisor tdx_guest\n")
        #expect(fixture.report().kernelBounce.memoryEncryption == "Intel TDX")
        #expect(fixture.report().kernelBounce.bounces == true)
        fixture.write("/proc/cpuinfo", "flags\t\t: fpu hypervisor sev sev_es\n")
        #expect(fixture.report().kernelBounce.memoryEncryption == "AMD SEV")
        #expect(fixture.report().findings.contains { $0.problem.contains("confidential VM (AMD SEV)") })
        // On a host, the SEV flags say the CPU can run such guests, not that this memory is encrypted.
        fixture.write("/proc/cpuinfo", "flags\t\t: fpu sev sev_es sev_snp\n")
        #expect(fixture.report().kernelBounce.memoryEncryption == nil)
        #expect(fixture.report().kernelBounce.bounces == false)
    }

    @Test func a32BitDMAMaskWithMemoryAbove4GiBBouncesTheHighMemory() throws {
        let fixture = try Fixture()
        fixture.write("/sys/devices/pci0000:00/0000:00:02.0/dma_mask_bits", "32\n")
        let report = fixture.report()
        #expect(report.kernelBounce.bounces == true)
        let finding = try #require(report.findings.first { $0.topic == "kernel bounce" })
        #expect(finding.problem.contains("32 bits (4 GiB)") && finding.problem.contains("25 GiB"))
        #expect(finding.fix.contains("IOMMU"))
        // The same mask with all memory below 4 GiB bounces nothing.
        fixture.write("/proc/zoneinfo", "Node 0, zone DMA32\n spanned 786432\n start_pfn: 4096\n")
        #expect(fixture.report().kernelBounce.bounces == false)
    }

    @Test func aPartitionIsTracedToItsDisksDevice() throws {
        let fixture = try Fixture()
        #expect(fixture.report(device: "254:1").kernelBounce.dmaDevice == "0000:00:02.0")
        #expect(fixture.report(device: "254:0").kernelBounce.dmaDevice == "0000:00:02.0")
    }

    @Test func aLoopDeviceDoesNoDMAOfItsOwn() throws {
        let fixture = try Fixture()
        let report = fixture.report(device: "7:3")
        #expect(report.kernelBounce.dmaDevice == nil)
        #expect(report.kernelBounce.dmaDeviceNote.contains("virtual device loop3"))
        #expect(report.kernelBounce.bounces == false)
    }

    @Test func aBtrfsMountIsTracedThroughItsSource() throws {
        // btrfs files carry an anonymous device number; the mount's source names the disk.
        let fixture = try Fixture()
        #expect(fixture.report(device: "0:41").kernelBounce.dmaDeviceNote.contains("virtual device loop3"))
        // A subvolume's number (0:42) differs from the one mountinfo shows (0:41): the mount is
        // then the longest mount point holding the path.
        var limits = Fixture.limits(device: "0:42")
        limits.path = "/mnt/b/sub/data"
        #expect(fixture.report(device: "0:42", limits: limits).kernelBounce.dmaDeviceNote.contains("virtual device loop3"))
        // /mnt/bee is not under /mnt/b: the longest mount holding it is /, on vda.
        limits.path = "/mnt/bee/data"
        #expect(fixture.report(device: "0:42", limits: limits).kernelBounce.dmaDevice == "0000:00:02.0")
        // The queue limits come from the same disk.
        #expect(QueueLimits.read(major: 0, minor: 42, path: "/mnt/b/sub/data", files: fixture.files)?.deviceName == "loop3")
        #expect(QueueLimits.read(major: 0, minor: 42, path: "/mnt/b/sub/data", files: fixture.files)?.logicalBlockSize == 4096)
        #expect(QueueLimits.read(major: 0, minor: 42, files: fixture.files) == nil)
    }

    @Test func debugfsUnavailableLeavesTheSwiotlbPoolUnknown() throws {
        let fixture = try Fixture()
        fixture.remove("/sys/kernel/debug")
        let unmounted = fixture.report().kernelBounce
        #expect(unmounted.swiotlbSlots == nil && unmounted.swiotlbSlotsUsed == nil)
        #expect(unmounted.swiotlbNote.contains("not mounted"))
        fixture.write("/sys/kernel/debug/x86/placeholder", "")
        #expect(fixture.report().kernelBounce.swiotlbNote.contains("no swiotlb directory"))
        try FileManager.default.createDirectory(atPath: fixture.root + "/sys/kernel/debug/swiotlb", withIntermediateDirectories: true)
        let empty = fixture.report().kernelBounce
        #expect(empty.swiotlbSlots == 0 && empty.swiotlbNote.contains("no default swiotlb pool"))
    }

    // MARK: io_uring

    @Test func ioUringDisabledForEveryone() throws {
        let fixture = try Fixture()
        fixture.write("/proc/sys/kernel/io_uring_disabled", "2\n")
        let finding = try #require(fixture.report().findings.first { $0.topic == "io_uring" })
        #expect(finding.problem.contains("io_uring_disabled is 2"))
        #expect(finding.consequence.contains("blocking engine"))
        #expect(finding.fix.contains("sysctl kernel.io_uring_disabled=0"))
    }

    @Test func ioUringLimitedToAGroupThisProcessIsNotIn() throws {
        let fixture = try Fixture()
        fixture.write("/proc/sys/kernel/io_uring_disabled", "1\n")
        fixture.write("/proc/sys/kernel/io_uring_group", "977\n")
        let outside = fixture.report()
        #expect(outside.ioUring.inGroup == false)
        #expect(outside.findings.contains { $0.problem.contains("group 977") })
        // A member of the group, or a process with CAP_SYS_ADMIN, may use it.
        fixture.status(seccomp: 0, filters: 0, capEff: "0000000000000000", groups: "24 977")
        #expect(fixture.report().ioUring.inGroup == true)
        #expect(fixture.report().findings.isEmpty)
        fixture.status(seccomp: 0, filters: 0, capEff: "0000000000200000")
        #expect(fixture.report().ioUring.capSysAdmin == true)
        #expect(fixture.report().findings.isEmpty)
    }

    @Test func aSeccompFilterThatRefusesTheRingIsNamed() throws {
        let fixture = try Fixture()
        fixture.status(seccomp: 2, filters: 1, capEff: "0000000000000000")
        var ring = fixture.report().ioUring
        #expect(ring.seccompMode == 2 && ring.seccompFilters == 1)
        ring.available = false
        ring.setupError = "io_uring_setup: Operation not permitted (errno 1)"
        let fixtureReport = fixture.report()
        let findings = Preflight.findings(kernelBounce: fixtureReport.kernelBounce, ioUring: ring, lockedMemory: fixtureReport.lockedMemory, limits: nil)
        let finding = try #require(findings.first)
        #expect(finding.problem.contains("seccomp filter"))
        #expect(finding.fix.contains("io_uring_setup, io_uring_enter and io_uring_register"))
    }

    // MARK: Locked memory

    @Test func aTinyMemlockLimitWithALargePoolSaysWhatToSet() throws {
        let fixture = try Fixture()
        fixture.limits(memlock: "65536")
        let report = fixture.report(rings: 2, queueDepth: 128, poolBytes: 64 << 20)
        let memory = report.lockedMemory
        #expect(memory.limitBytes == 65536)
        #expect(memory.ringBytes == Preflight.LockedMemory.ringBytes(runtimeQueueDepth: 128))
        #expect(memory.neededBytes == UInt64(2 * (memory.ringBytes + (64 << 20))))
        #expect(!memory.fits)
        #expect(memory.suggestedLimitBytes == 129 << 20)
        let finding = try #require(report.findings.first { $0.topic == "locked memory" })
        #expect(finding.problem.contains("RLIMIT_MEMLOCK is 64 KiB"))
        #expect(finding.fix.contains("ulimit -l \(129 << 10)") && finding.fix.contains("LimitMEMLOCK=\(129 << 20)"))
        // CAP_IPC_LOCK lifts the limit; so does "unlimited".
        fixture.status(seccomp: 0, filters: 0, capEff: "0000000000004000")
        #expect(fixture.report(poolBytes: 64 << 20).lockedMemory.fits)
        fixture.status(seccomp: 0, filters: 0, capEff: "0000000000000000")
        fixture.limits(memlock: "unlimited")
        let unlimited = fixture.report(poolBytes: 64 << 20).lockedMemory
        #expect(unlimited.limitKnown && unlimited.limitBytes == nil && unlimited.fits)
    }

    @Test func ringBytesFollowTheKernelsRounding() {
        // Depth 128: (128 + 1) × 2 = 258 SQEs → 512; 1,024 CQEs. Rings: 256 + 16 KiB + 2 KiB
        // → 5 pages; SQEs: 32 KiB.
        #expect(Preflight.LockedMemory.ringBytes(runtimeQueueDepth: 128) == 5 * Sys.pageSize + 32 << 10)
        #expect(Preflight.LockedMemory.ringBytes(runtimeQueueDepth: 1) == 2 * Sys.pageSize)
    }

    // MARK: The path

    @Test func aFilesystemWithoutODirectAndOneThatCachesMisalignedIOAreExplained() throws {
        let fixture = try Fixture()
        let refused = fixture.report(limits: Fixture.limits(device: "254:1", directIO: false))
        let finding = try #require(refused.findings.first { $0.topic == "path" })
        #expect(finding.problem.contains("does not do direct I/O") && finding.problem.contains("EINVAL"))
        #expect(finding.consequence.contains(".preferred"))
        let cached = fixture.report(limits: Fixture.limits(device: "254:1", pageCache: true))
        let cachedFinding = try #require(cached.findings.first { $0.topic == "path" })
        #expect(cachedFinding.problem.contains("through the page cache"))
        #expect(cachedFinding.fix.contains("4096 bytes"))
    }

    // MARK: Bad input

    @Test func anEmptyRootIsAllUnknownAndNeverACrash() throws {
        let root = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(root) }
        let report = Preflight(files: SystemFiles(root: root), limits: Fixture.limits(device: "254:1"), tryRing: false, rings: 1, queueDepth: 8, poolBytes: 0)
        #expect(report.kernelBounce.dmaDevice == nil && report.kernelBounce.dmaMaskBits == nil)
        #expect(report.kernelBounce.memoryEndAddress == nil && report.kernelBounce.bounces == nil)
        #expect(report.kernelBounce.swiotlbNote.hasPrefix("unknown"))
        #expect(report.ioUring.disabled == nil && report.ioUring.seccompMode == nil && report.ioUring.capSysAdmin == nil)
        #expect(!report.lockedMemory.limitKnown && !report.lockedMemory.fits)
        #expect(report.findings.isEmpty, "unknown is not a problem: \(report.findings)")
    }

    @Test func malformedFilesAreUnknown() throws {
        let fixture = try Fixture()
        fixture.write("/sys/devices/pci0000:00/0000:00:02.0/dma_mask_bits", "sixty-four\n")
        fixture.write("/proc/zoneinfo", "Node zone spanned start_pfn: x\n\u{0}\u{1}")
        fixture.write("/sys/kernel/debug/swiotlb/io_tlb_nslabs", "lots")
        fixture.write("/proc/sys/kernel/io_uring_disabled", "")
        fixture.write("/proc/self/status", "CapEff:\tzz\nSeccomp:\t\n")
        fixture.write("/proc/self/limits", "Max locked memory\n")
        fixture.write("/proc/self/mountinfo", "garbage\n")
        let report = fixture.report()
        #expect(report.kernelBounce.dmaDevice == "0000:00:02.0" && report.kernelBounce.dmaMaskBits == nil)
        #expect(report.kernelBounce.dmaDeviceNote.contains("malformed"))
        #expect(report.kernelBounce.memoryEndAddress == nil && report.kernelBounce.bounces == nil)
        #expect(report.kernelBounce.swiotlbSlots == nil)
        #expect(report.ioUring.disabled == nil && report.ioUring.seccompMode == nil && report.ioUring.capSysAdmin == nil)
        #expect(!report.lockedMemory.limitKnown)
        #expect(fixture.report(device: "0:41").kernelBounce.dmaDevice == nil)
    }

    @Test func sizesPrintAsPeopleReadThem() {
        #expect(Preflight.size(25 << 30) == "25 GiB")
        #expect(Preflight.size(53_248) == "52 KiB")
        #expect(Preflight.size(134_324_224) == "128.1 MiB")
        #expect(Preflight.size(1_536) == "1.5 KiB")
        #expect(Preflight.size(100) == "100 bytes")
    }
}
