import Foundation
import Testing
@testable import DirectIO

/// Reading queue limits from sysfs, on a fake sysfs tree (under a fake root) laid out as the kernel lays it out
/// (Documentation/ABI/stable/sysfs-block): /sys/dev/block/M:m links into /sys/devices, a
/// partition is a child directory of its disk with a `partition` file and no queue.
@Suite struct QueueLimitsTests {
    private func fakeSysfs() throws -> String {
        let root = try TestSupport.scratchDirectory()
        let sysfs = root + "/sys"
        let fm = FileManager.default
        let disk = sysfs + "/devices/virtual/block/sdz"
        try fm.createDirectory(atPath: disk + "/queue", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: disk + "/sdz1", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: sysfs + "/dev/block", withIntermediateDirectories: true)
        let values = ["logical_block_size": "4096", "physical_block_size": "4096", "max_sectors_kb": "1280",
                      "max_segments": "128", "max_segment_size": "65536", "dma_alignment": "511", "virt_boundary_mask": "4095"]
        for (name, value) in values { try (value + "\n").write(toFile: disk + "/queue/" + name, atomically: false, encoding: .utf8) }
        try "1\n".write(toFile: disk + "/sdz1/partition", atomically: false, encoding: .utf8)
        try fm.createSymbolicLink(atPath: sysfs + "/dev/block/8:400", withDestinationPath: "../../devices/virtual/block/sdz")
        try fm.createSymbolicLink(atPath: sysfs + "/dev/block/8:401", withDestinationPath: "../../devices/virtual/block/sdz/sdz1")
        return root
    }

    @Test func aDiskReadsItsOwnQueue() throws {
        let root = try fakeSysfs()
        defer { TestSupport.remove(root) }
        let limits = try #require(QueueLimits.read(major: 8, minor: 400, files: SystemFiles(root: root)))
        #expect(limits == QueueLimits(deviceName: "sdz", logicalBlockSize: 4096, physicalBlockSize: 4096, maxIOBytes: 1280 * 1024,
                                      maxSegments: 128, maxSegmentBytes: 65536, dmaAlignment: 511, virtBoundaryMask: 4095))
    }

    @Test func aPartitionResolvesToItsDisk() throws {
        let root = try fakeSysfs()
        defer { TestSupport.remove(root) }
        let partition = try #require(QueueLimits.read(major: 8, minor: 401, files: SystemFiles(root: root)))
        let disk = try #require(QueueLimits.read(major: 8, minor: 400, files: SystemFiles(root: root)))
        #expect(partition == disk)
    }

    @Test func devicesWithoutABlockQueueHaveNoLimits() throws {
        let root = try fakeSysfs()
        defer { TestSupport.remove(root) }
        #expect(QueueLimits.read(major: 0, minor: 27, files: SystemFiles(root: root)) == nil)
    }
}
