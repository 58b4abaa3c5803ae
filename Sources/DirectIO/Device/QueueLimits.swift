import Glibc

/// A block device's request-queue limits, from /sys/dev/block/MAJOR:MINOR/queue.
/// These are the user-space view of the seed's "device limits": what one request to the
/// device may look like (Documentation/ABI/stable/sysfs-block).
package struct QueueLimits: Sendable, Hashable {
    /// The kernel's name for the disk holding the queue ("vda", "loop3").
    package var deviceName: String
    /// Smallest unit the device addresses (logical_block_size).
    package var logicalBlockSize: Int
    /// Smallest unit it writes without read-modify-write (physical_block_size).
    package var physicalBlockSize: Int
    /// Largest request the kernel sends (max_sectors_kb × 1024).
    package var maxIOBytes: Int
    /// Most scatter-gather segments per request (max_segments).
    package var maxSegments: Int
    /// Largest segment (max_segment_size).
    package var maxSegmentBytes: Int
    /// Memory alignment mask the device needs (dma_alignment; 511 means 512-byte aligned).
    package var dmaAlignment: Int
    /// Segments may not cross a boundary of this mask + 1 (virt_boundary_mask; 0 = none).
    package var virtBoundaryMask: Int
    /// Untorn writes the device takes (atomic_write_unit_min_bytes and _max_bytes; 0 when it
    /// has none, nil when the kernel predates them, 6.11).
    package var atomicWriteUnitMin: Int? = nil
    package var atomicWriteUnitMax: Int? = nil

    /// Reads the limits for device `major:minor`, resolving a partition to its disk, and a
    /// filesystem on an anonymous device (btrfs) to the disk its mount names (through `path`).
    /// Returns nil for filesystems without a block device (tmpfs, NFS).
    static func read(major: UInt32, minor: UInt32, path: String? = nil, files: SystemFiles = .live) -> QueueLimits? {
        guard let directory = files.diskDirectory(major: major, minor: minor, path: path) else { return nil }
        let queue = directory + "/queue/"
        guard let logical = files.number(queue + "logical_block_size") else { return nil }
        let name = String(directory[directory.index(after: directory.lastIndex(of: "/") ?? directory.startIndex)...])
        return QueueLimits(
            deviceName: name,
            logicalBlockSize: logical,
            physicalBlockSize: files.number(queue + "physical_block_size") ?? logical,
            maxIOBytes: (files.number(queue + "max_sectors_kb") ?? 0) * 1024,
            maxSegments: files.number(queue + "max_segments") ?? 0,
            maxSegmentBytes: files.number(queue + "max_segment_size") ?? 0,
            dmaAlignment: files.number(queue + "dma_alignment") ?? (logical - 1),
            virtBoundaryMask: files.number(queue + "virt_boundary_mask") ?? 0,
            atomicWriteUnitMin: files.number(queue + "atomic_write_unit_min_bytes"),
            atomicWriteUnitMax: files.number(queue + "atomic_write_unit_max_bytes"))
    }

}

/// Reads a small text file (sysfs attributes, /proc files) whole.
func readSmallFile(_ path: String) -> String? {
    guard let fd = try? Sys.open(path, flags: O_RDONLY | O_CLOEXEC) else { return nil }
    defer { _ = try? Sys.close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = chunk.withUnsafeMutableBytes { (try? Sys.pread(fd, $0.baseAddress, $0.count, Int64(bytes.count))) ?? -1 }
        if count <= 0 { break }
        bytes.append(contentsOf: chunk[0..<count])
    }
    return String(decoding: bytes, as: UTF8.self)
}

extension String {
    func trimmingWhitespace() -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return String(slice)
    }
}
