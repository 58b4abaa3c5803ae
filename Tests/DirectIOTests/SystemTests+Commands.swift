import Foundation
import Testing
@testable import DirectIO

extension SystemTests {
    /// The command line names its own remedy where the filesystem has no O_DIRECT (ramfs),
    /// not the library's open option.
    @Test func commandsOnRamfsNameTheirOwnRemedy() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let mountPoint = directory + "/ramfs"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = try TestSupport.run(["mount", "-t", "ramfs", "none", mountPoint])
        try #require(mount.status == 0, "mount ramfs: \(mount.error)")
        defer { _ = try? TestSupport.run(["umount", mountPoint]) }
        let bench = try TestSupport.run([TestSupport.dioExecutable, "bench", mountPoint + "/b", "--size", "1m", "--rw", "read", "--runtime", "0.1", "--ramp", "0"])
        #expect(bench.status != 0 && bench.error.contains("--mode buffered"), "\(bench.error)")
        let verify = try TestSupport.run([TestSupport.dioExecutable, "verify", mountPoint + "/v", "--size", "1m"])
        #expect(verify.status != 0 && verify.error.contains("dio verify checks direct I/O"), "\(verify.error)")
        for output in [bench.error, verify.error] { #expect(!output.contains(".preferred")) }
        let buffered = try TestSupport.run([TestSupport.dioExecutable, "bench", mountPoint + "/b", "--size", "1m", "--rw", "read", "--runtime", "0.1", "--ramp", "0", "--mode", "buffered", "--json"])
        #expect(buffered.status == 0, "\(buffered.error)")
    }
}
