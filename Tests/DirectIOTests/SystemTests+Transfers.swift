import Foundation
import Glibc
import Testing
@testable import DirectIO

/// Transfers on the filesystems and devices that behave differently: tmpfs (no extents to
/// share, direct I/O as a no-op), xfs and btrfs (reflink), a 4 KiB-sector device (direct I/O
/// in 4 KiB blocks only), and a full filesystem. Part of the serialized root suite, since it
/// makes loop devices and mounts.
extension SystemTests {
    @Test func everyStrategyIsByteExactOnTmpfs() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let mountPoint = directory + "/tmpfs"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mounted = try TestSupport.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", mountPoint])
        try #require(mounted.status == 0, "mount tmpfs: \(mounted.error)")
        defer { _ = try? TestSupport.run(["umount", mountPoint]) }
        try TransferFixture.checkEveryStrategy(in: mountPoint, reflinks: false, seed: 21)
    }

    @Test(.enabled(if: TestSupport.which("mkfs.xfs") != nil, "mkfs.xfs not installed (apt-get install xfsprogs)"))
    func xfsReflinksInTimeIndependentOfSizeAndEveryStrategyIsByteExact() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let filesystem = try MountedFilesystem.make("xfs", megabytes: 600, sectorSize: 512, in: directory)
        defer { filesystem.unmount() }
        try TransferFixture.checkEveryStrategy(in: filesystem.mountPoint, reflinks: true, seed: 22)
        // auto picks reflink, and a 256 MiB clone moves no data: it allocates nothing new.
        let source = filesystem.mountPoint + "/big"
        let bytes = try TransferFixture.makeFile(source, size: 256 << 20, seed: 23)
        let before = try statfsFree(filesystem.mountPoint)
        let report = try TransferFixture.copy(source, filesystem.mountPoint + "/clone", strategy: nil)
        #expect(report.strategy == .reflink)
        #expect(report.skipped.isEmpty)
        let after = try statfsFree(filesystem.mountPoint)
        #expect(before - after < 16 << 20, "a reflink of 256 MiB took \(before - after) bytes of space")
        TestSupport.expectSameBytes(try TestSupport.referenceRead(filesystem.mountPoint + "/clone", count: bytes.count + 1), bytes, "xfs reflink")
    }

    @Test(.enabled(if: TestSupport.which("mkfs.btrfs") != nil, "mkfs.btrfs not installed (apt-get install btrfs-progs)"))
    func btrfsReflinksAndEveryStrategyIsByteExact() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let filesystem = try MountedFilesystem.make("btrfs", megabytes: 400, sectorSize: 512, in: directory)
        defer { filesystem.unmount() }
        try TransferFixture.checkEveryStrategy(in: filesystem.mountPoint, reflinks: true, seed: 24)
        let source = filesystem.mountPoint + "/a"
        try TransferFixture.makeFile(source, size: 1 << 20, seed: 25)
        #expect(try TransferFixture.copy(source, filesystem.mountPoint + "/b", strategy: nil).strategy == .reflink)
    }

    @Test(.enabled(if: TestSupport.which("mkfs.ext4") != nil, "mkfs.ext4 not installed (e2fsprogs)"))
    func everyStrategyIsByteExactOnAFourKiBSectorDevice() throws {
        // ext4 on a 4 KiB-sector loop device: direct I/O only in 4 KiB blocks, so the direct
        // pipeline's edges (sizes not multiples of 4096) go through splice.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let filesystem = try MountedFilesystem.make("ext4", megabytes: 256, sectorSize: 4096, in: directory)
        defer { filesystem.unmount() }
        let mountPoint = filesystem.mountPoint
        let probe = try DirectFile(path: mountPoint + "/probe", options: OpenOptions(create: true))
        #expect(probe.limits.offsetAlignment == 4096)
        try TransferFixture.checkEveryStrategy(in: mountPoint, reflinks: false, seed: 26)

        // The raw device as a destination: written in place by `dio copy`.
        let source = directory + "/image"
        let bytes = try TransferFixture.makeFile(source, size: (8 << 20) + 100, seed: 27)
        let raw = try LoopDevice.attach(megabytes: 16, sectorSize: 4096, in: directory)
        defer { raw.detach() }
        for strategy in ["direct", "splice", "buffered"] {
            let result = try TestSupport.run([TestSupport.dioExecutable, "copy", "--json", "--verify", "--strategy", strategy, source, raw.path])
            // --verify compares whole files: the device is larger than the image, so it fails;
            // the bytes themselves are checked below.
            #expect(result.status == 0 || result.error.contains("CRC-32C"), "\(strategy): \(result.error)")
            TestSupport.expectSameBytes(try TestSupport.referenceRead(raw.path, count: bytes.count), bytes, "\(strategy) onto \(raw.path)")
        }
    }

    @Test(.enabled(if: TestSupport.which("mkfs.ext4") != nil, "mkfs.ext4 not installed (e2fsprogs)"))
    func copyOntoAFullFilesystemNamesTheOffsetAndReplacesNothing() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let filesystem = try MountedFilesystem.make("ext4", megabytes: 24, in: directory)
        defer { filesystem.unmount() }
        let mountPoint = filesystem.mountPoint
        // The source on the same filesystem, so copy_file_range and reflink can be tried:
        // 12 MiB of the ~20 MiB usable, and a second copy does not fit.
        let source = mountPoint + "/source"
        try TransferFixture.makeFile(source, size: 12 << 20, seed: 28)
        let destination = mountPoint + "/copy"
        let old = TestSupport.pattern(count: 10_000, seed: 29)
        try TestSupport.referenceWrite(destination, old)
        for strategy in ["auto", "copy-range", "splice", "sendfile", "direct", "buffered"] {
            let result = try TestSupport.run([TestSupport.dioExecutable, "copy", "--strategy", strategy, source, destination])
            #expect(result.status == 1, "\(strategy)")
            #expect(result.error.contains("no space left on device writing \(destination) at offset"), "\(strategy): \(result.error)")
            #expect(result.error.contains("nothing was replaced"))
            TestSupport.expectSameBytes(try TestSupport.referenceRead(destination, count: 20_000), old, "\(strategy): the old destination")
            #expect(try FileManager.default.contentsOfDirectory(atPath: mountPoint).sorted() == ["copy", "lost+found", "source"])
        }
    }

    private func statfsFree(_ path: String) throws -> Int {
        var info = statvfs()
        try #require(statvfs(path, &info) == 0)
        return Int(info.f_bfree) * Int(info.f_frsize)
    }
}
