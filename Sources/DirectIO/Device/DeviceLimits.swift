import CDirectIO
import Glibc
import SystemPackage

/// What direct I/O to one file or block device must respect: the user-space form of a
/// device's DMA limits (seeds 002 and 003).
///
/// Alignment comes from statx STATX_DIOALIGN (and STATX_DIO_READ_ALIGN, 6.14+) when the
/// kernel reports it, else from a probe with real direct reads; queue limits come from sysfs.
/// Whether O_DIRECT works is always checked by a probe, never assumed from a successful open.
public struct DeviceLimits: Sendable, Equatable {
    public var path: String
    /// The filesystem type ("ext4", "xfs", "tmpfs"), or "block device" for a device node.
    public var filesystem: String
    /// The device number, "major:minor" (for a block device node, the device it names).
    public var device: String
    public var isBlockDevice: Bool
    /// Whether O_DIRECT reads and writes work here.
    public var directIO: Bool
    /// How `directIO` and the alignments were established, or why direct I/O does not work.
    public var directIONote: String
    /// Buffer addresses for direct I/O must be multiples of this.
    public var memoryAlignment: Int
    /// File offsets and lengths for direct writes must be multiples of this.
    public var offsetAlignment: Int
    /// File offsets and lengths for direct reads must be multiples of this (xfs on 6.14+ may
    /// allow smaller read alignment than write alignment).
    public var readOffsetAlignment: Int
    /// Where the alignments came from.
    package var alignmentSource: AlignmentSource
    /// The block queue's limits; nil for filesystems without a block device (tmpfs, NFS).
    package var queue: QueueLimits?
    /// Whether the filesystem accepts misaligned O_DIRECT requests by serving them through
    /// the page cache (btrfs, below its sector size), detected by the probe. The alignments
    /// above are then the ones that keep I/O direct: DirectIO bounces what breaks them itself,
    /// where it is counted, instead of letting the kernel copy it unseen.
    public var pageCacheServesMisaligned: Bool = false
    /// Untorn (atomic) writes: a write of a power-of-two length between these, at an offset
    /// that is a multiple of its length, lands whole or not at all (RWF_ATOMIC). Nil when the
    /// file or device has no atomic write support (statx STATX_WRITE_ATOMIC; for a block
    /// device also sysfs atomic_write_unit_*_bytes).
    public var atomicWriteUnitMin: Int? = nil
    public var atomicWriteUnitMax: Int? = nil
    /// Most memory segments one atomic write may have.
    public var atomicWriteSegmentsMax: Int? = nil
    /// The largest atomic write the device does in hardware (xfs on 6.16+ does larger ones
    /// up to `atomicWriteUnitMax` in software, more slowly); nil when not reported.
    public var atomicWriteUnitMaxOptimized: Int? = nil

    package enum AlignmentSource: String, Sendable {
        case statx = "statx"
        case probe = "probe"
        case blockSize = "logical block size"
        case pageSize = "page size"
    }

    public var logicalBlockSize: Int? { queue?.logicalBlockSize }
    public var physicalBlockSize: Int? { queue?.physicalBlockSize }
    public var maxIOBytes: Int? { queue?.maxIOBytes }
    public var maxSegments: Int? { queue?.maxSegments }
    public var maxSegmentBytes: Int? { queue?.maxSegmentBytes }

    /// The limits of the file or device at `path`; for a directory, those a new regular file
    /// created in it would have (probed with a temporary file that is removed afterwards).
    public static func of(path: String) throws(DirectIOError) -> DeviceLimits {
        let fd: Int32
        do { fd = try Sys.open(path, flags: O_RDONLY | O_CLOEXEC) } catch {
            throw .system(error, operation: "inspect", call: "open", path: path)
        }
        defer { _ = try? Sys.close(fd) }
        let stx = try statx(fd, path: path)
        if UInt32(stx.stx_mode) & S_IFMT == S_IFDIR {
            return try ofNewFile(in: path)
        }
        return try assemble(fd: fd, path: path, stx: stx, probeDirectory: parentDirectory(of: path))
    }

    /// The limits of an open file or device.
    public static func of(fd: Int32, path: String) throws(DirectIOError) -> DeviceLimits {
        try assemble(fd: fd, path: path, stx: statx(fd, path: path), probeDirectory: probeDirectory(for: path))
    }

    /// Where to create the probe file for `path`: its directory, or for a file reopened by
    /// /proc/self/fd/N (the transfer paths do that), the directory of the file the link names.
    static func probeDirectory(for path: String) -> String {
        guard path.hasPrefix("/proc/self/fd/") else { return parentDirectory(of: path) }
        guard let resolved = try? Sys.readlink(path), !resolved.isEmpty else { return parentDirectory(of: path) }
        // An unlinked (or O_TMPFILE) file reads "/dir/name (deleted)": the directory still holds.
        return resolved.hasPrefix("/") ? parentDirectory(of: resolved) : parentDirectory(of: path)
    }

    private static func ofNewFile(in directory: String) throws(DirectIOError) -> DeviceLimits {
        let fd: Int32
        do {
            fd = try Sys.open(directory, flags: DIO_O_TMPFILE | O_RDWR | O_CLOEXEC, mode: 0o600)
        } catch {
            // No O_TMPFILE, or no write permission: the directory's own device answers for
            // sysfs and probing, but statx alignment for regular files cannot be read here.
            let dirFD: Int32
            do { dirFD = try Sys.open(directory, flags: O_RDONLY | O_CLOEXEC) } catch {
                throw .system(error, operation: "inspect", call: "open", path: directory)
            }
            defer { _ = try? Sys.close(dirFD) }
            var limits = try assemble(fd: dirFD, path: directory, stx: statx(dirFD, path: directory), probeDirectory: directory)
            limits.directIONote += "; no temporary file could be created here (\(error)), so statx alignment of a new file is unknown"
            return limits
        }
        defer { _ = try? Sys.close(fd) }
        return try assemble(fd: fd, path: directory, stx: statx(fd, path: directory), probeDirectory: directory)
    }

    private static func statx(_ fd: Int32, path: String) throws(DirectIOError) -> dio_statx {
        // With STATX_MNT_ID_UNIQUE the kernel reports a mount ID never reused (else the
        // classic one, and STATX_MNT_ID in the mask): the key of `DeviceCache.mounts`.
        let mask = UInt32(STATX_TYPE | STATX_MODE | STATX_SIZE | STATX_MNT_ID | STATX_DIOALIGN | STATX_DIO_READ_ALIGN) | STATX_WRITE_ATOMIC | STATX_MNT_ID_UNIQUE
        do { return try Sys.statx(fd, mask: mask) } catch {
            throw .system(error, operation: "inspect", call: "statx", path: path)
        }
    }

    private static func assemble(fd: Int32, path: String, stx: dio_statx, probeDirectory: String) throws(DirectIOError) -> DeviceLimits {
        let type = UInt32(stx.stx_mode) & S_IFMT
        let isBlock = type == S_IFBLK
        let major = isBlock ? stx.stx_rdev_major : stx.stx_dev_major
        let minor = isBlock ? stx.stx_rdev_minor : stx.stx_dev_minor
        // A file's queue limits and filesystem name (a dozen sysfs reads, readlinks and the
        // mount table: some 190 µs) are the same for every file of a mount, and cannot change
        // while it is mounted (the mount holds its device): cached per mount, by its unique ID.
        // A block device's are read each time: a loop device number may come back with
        // another sector size. The probe is cached per device and queue.
        let mount = describeMount(fd: fd, path: path, stx: stx, isBlock: isBlock, major: major, minor: minor)
        let queue = mount.queue
        let probe = DeviceCache.shared.probe(major: major, minor: minor, queue: queue) { () -> DirectIOProbe? in
            if isBlock { return DirectIOProbe.onExisting(fd: fd) }
            return DirectIOProbe.inDirectory(probeDirectory)
                ?? (stx.stx_size >= UInt64(DirectIOProbe.probeBytes) && type == S_IFREG ? DirectIOProbe.onExisting(fd: fd) : nil)
        }
        let device = (queue: queue, probe: probe)

        let filesystem = mount.filesystem

        var memory: Int
        var offset: Int
        var source: AlignmentSource
        var directIO: Bool
        var note: String
        let statxHasAlignment = stx.stx_mask & UInt32(STATX_DIOALIGN) != 0
        if statxHasAlignment && stx.stx_dio_offset_align != 0 {
            memory = Int(stx.stx_dio_mem_align)
            offset = Int(stx.stx_dio_offset_align)
            source = .statx
            directIO = device.probe?.works ?? true
            note = device.probe.map { $0.works ? "statx STATX_DIOALIGN; \($0.note)" : $0.note } ?? "statx STATX_DIOALIGN (not checked: no probe file could be created)"
        } else if let probe = device.probe, probe.works, let probedMemory = probe.memoryAlignment, let probedOffset = probe.offsetAlignment {
            memory = probedMemory
            offset = probedOffset
            source = .probe
            directIO = true
            note = statxHasAlignment ? "statx reports no direct I/O for this file, yet direct reads work; \(probe.note)" : "no STATX_DIOALIGN; \(probe.note)"
        } else if let queue = device.queue {
            memory = queue.dmaAlignment + 1
            offset = queue.logicalBlockSize
            source = .blockSize
            directIO = device.probe?.works ?? (statxHasAlignment ? false : true)
            note = device.probe?.note ?? (statxHasAlignment ? "statx reports no direct I/O support for this file" : "no STATX_DIOALIGN and no probe: alignment from the block queue")
        } else {
            memory = Sys.pageSize
            offset = Sys.pageSize
            source = .pageSize
            directIO = device.probe?.works ?? false
            note = device.probe?.note ?? "no STATX_DIOALIGN, no block queue and no probe: assuming page alignment"
        }
        if statxHasAlignment && stx.stx_dio_offset_align == 0 && device.probe == nil {
            directIO = false
        }
        var readOffset = offset
        if stx.stx_mask & STATX_DIO_READ_ALIGN != 0 && stx.stx_dio_read_offset_align != 0 {
            readOffset = Int(stx.stx_dio_read_offset_align)
        }
        var limits = DeviceLimits(
            path: path, filesystem: filesystem, device: "\(major):\(minor)", isBlockDevice: isBlock,
            directIO: directIO, directIONote: note, memoryAlignment: memory, offsetAlignment: offset,
            readOffsetAlignment: readOffset, alignmentSource: source, queue: device.queue,
            pageCacheServesMisaligned: device.probe?.servesMisalignedThroughPageCache ?? false)
        limits.readAtomicWrites(stx, queue: isBlock ? device.queue : nil)
        return limits
    }

    /// The queue limits and filesystem name of the mount holding the file `fd` (from the cache
    /// when the kernel gave the mount's unique ID), or of the block device `fd` is.
    private static func describeMount(fd: Int32, path: String, stx: dio_statx, isBlock: Bool, major: UInt32, minor: UInt32) -> DeviceCache.Mount {
        if isBlock { return DeviceCache.Mount(queue: QueueLimits.read(major: major, minor: minor), filesystem: "block device") }
        let unique = stx.stx_mask & STATX_MNT_ID_UNIQUE != 0 ? stx.stx_mnt_id : nil
        if let unique, let known = DeviceCache.shared.mount(unique) { return known }
        // mountinfo names mounts by their classic ID: ask for it when statx gave the unique one.
        let classicID: UInt64? = if stx.stx_mask & UInt32(STATX_MNT_ID) != 0 { stx.stx_mnt_id } else if unique != nil {
            (try? Sys.statx(fd, mask: UInt32(STATX_MNT_ID))).flatMap { $0.stx_mask & UInt32(STATX_MNT_ID) != 0 ? $0.stx_mnt_id : nil }
        } else { nil }
        let filesystem = classicID.flatMap(FilesystemName.fromMountInfo(mountID:))
            ?? ((try? Sys.filesystemMagic(fd)).map(FilesystemName.fromMagic) ?? "unknown")
        let described = DeviceCache.Mount(queue: QueueLimits.read(major: major, minor: minor, path: path), filesystem: filesystem)
        if let unique { DeviceCache.shared.remember(described, forMount: unique) }
        return described
    }

    /// The atomic write limits from statx, or for a block device whose kernel reports none
    /// there, from its queue (one segment).
    private mutating func readAtomicWrites(_ stx: dio_statx, queue: QueueLimits?) {
        if stx.stx_mask & STATX_WRITE_ATOMIC != 0 && stx.stx_atomic_write_unit_max != 0 {
            atomicWriteUnitMin = Int(stx.stx_atomic_write_unit_min)
            atomicWriteUnitMax = Int(stx.stx_atomic_write_unit_max)
            atomicWriteSegmentsMax = Int(max(stx.stx_atomic_write_segments_max, 1))
            if stx.stx_atomic_write_unit_max_opt != 0 { atomicWriteUnitMaxOptimized = Int(stx.stx_atomic_write_unit_max_opt) }
        } else if let queue, let low = queue.atomicWriteUnitMin, let high = queue.atomicWriteUnitMax, high > 0 {
            atomicWriteUnitMin = low
            atomicWriteUnitMax = high
            atomicWriteSegmentsMax = 1
        }
    }

    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }
}

/// Direct-I/O probe results per device: a probe creates a file and does a few dozen direct
/// reads, and its answer does not change while the device and its queue stay the same.
final class DeviceCache: Sendable {
    private struct Key: Hashable {
        var device: UInt64
        var queue: QueueLimits?
    }

    /// What every file of one mount shares.
    struct Mount: Sendable {
        var queue: QueueLimits?
        var filesystem: String
    }

    static let shared = DeviceCache()
    private let entries = ConditionLock<[Key: DirectIOProbe?]>([:])
    /// By unique mount ID (STATX_MNT_ID_UNIQUE), which the kernel never reuses.
    private let mounts = ConditionLock<[UInt64: Mount]>([:])

    func mount(_ uniqueID: UInt64) -> Mount? { mounts.withLock { $0[uniqueID] } }

    func remember(_ mount: Mount, forMount uniqueID: UInt64) { mounts.withLock { $0[uniqueID] = mount } }

    func probe(major: UInt32, minor: UInt32, queue: QueueLimits?, make: () -> DirectIOProbe?) -> DirectIOProbe? {
        let key = Key(device: UInt64(major) << 32 | UInt64(minor), queue: queue)
        if let entry = entries.withLock({ $0[key] }) { return entry }
        let entry = make()
        entries.withLock { $0[key] = entry }
        return entry
    }

    /// Forgets everything (tests that reuse a loop device number with a new backing file).
    func removeAll() {
        entries.withLock { $0.removeAll() }
        mounts.withLock { $0.removeAll() }
    }
}
