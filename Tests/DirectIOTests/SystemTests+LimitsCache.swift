import Foundation
import Glibc
import Testing
@testable import DirectIO

/// A file's device-level limits are cached per mount (by its unique ID): the cached answer is
/// the fresh one, and a new mount, even of a loop device number used before with another
/// sector size, is read afresh.
extension SystemTests {
    @Test(.enabled(if: TestSupport.which("mkfs.ext4") != nil, "mkfs.ext4 not installed (e2fsprogs)"))
    func limitsCachedPerMountFollowANewMountOfTheSameDevice() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        var devices: [String] = []
        for sectorSize in [512, 4096, 512] {
            let filesystem = try MountedFilesystem.make("ext4", megabytes: 64, sectorSize: sectorSize, in: directory)
            devices.append(filesystem.device.path)
            defer { filesystem.unmount() }
            let path = filesystem.mountPoint + "/data"
            try TestSupport.referenceWrite(path, TestSupport.pattern(count: 65536, seed: 7))
            let cached = try DeviceLimits.of(path: path)
            let again = try DeviceLimits.of(path: path)
            DeviceCache.shared.removeAll()
            let fresh = try DeviceLimits.of(path: path)
            #expect(cached.offsetAlignment == sectorSize && cached.queue?.logicalBlockSize == sectorSize,
                    "\(filesystem.device.path) with \(sectorSize)-byte sectors: \(cached.offsetAlignment), queue \(String(describing: cached.queue?.logicalBlockSize))")
            #expect(cached.filesystem == "ext4")
            for other in [again, fresh] {
                #expect(other.offsetAlignment == cached.offsetAlignment && other.memoryAlignment == cached.memoryAlignment)
                #expect(other.queue == cached.queue && other.filesystem == cached.filesystem && other.directIO == cached.directIO)
            }
            // Through a DirectFile: bytes at the alignment the new mount has.
            let file = try DirectFile(path: path, options: OpenOptions(access: .readWrite))
            let bytes = TestSupport.pattern(count: sectorSize, seed: UInt64(sectorSize))
            #expect(try file.write(bytes, at: Int64(sectorSize)) == sectorSize)
            #expect(try TestSupport.referenceRead(path, count: sectorSize, at: Int64(sectorSize)) == bytes)
        }
        // The point: one loop number came back with another sector size (else nothing was tested).
        #expect(Set(devices).count < devices.count, "no loop device number was reused: \(devices)")
    }
}
