import Foundation
import Glibc
import Testing
import DirectIO
@testable import DIOCommands

/// `dio verify`: clean runs pass; corrupt, misplaced and lost blocks are each found and told
/// apart (RELIABILITY-CASES 20).
@Suite struct VerifyTests {
    private func verify(_ path: String, _ arguments: [String]) throws -> (status: Int32, json: [String: Any]) {
        let result = try TestSupport.runDioNeedingRings(["verify", path, "--json"] + arguments)
        return (result.status, try TestSupport.json(result.output))
    }

    @Test func crc32cMatchesTheStandardCheckValue() {
        // The CRC-32C of "123456789" is 0xE3069283 (RFC 3720, appendix B.4).
        let value = Array("123456789".utf8).withUnsafeBytes { CRC32C.checksum($0) }
        #expect(value == 0xE306_9283)
    }

    @Test(arguments: ["uring", "blocking"])
    func cleanRunsPassWithAlignedAndMisalignedLayouts(engine: String) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        for extra in [[], ["--buffer-offset", "8"], ["--buffer-offset", "8", "--offset-jitter", "100", "--bs", "16k"]] {
            let path = directory + "/v\(extra.count)"
            let (status, json) = try verify(path, ["--size", "8m", "--engine", engine] + extra)
            #expect(status == 0, "\(extra)")
            #expect(json["mismatches"] as? Int == 0)
            #expect((json["bytesVerified"] as? Int ?? 0) > 7 << 20)
            #expect(json["bytesWritten"] as? Int == json["bytesVerified"] as? Int)
        }
    }

    @Test func corruptMisplacedAndLostBlocksAreToldApart() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/v"
        let block = 65536
        #expect(try verify(path, ["--size", "4m"]).status == 0)
        let firstPass = try TestSupport.referenceRead(path, count: 4 << 20)
        #expect(try verify(path, ["--size", "4m", "--sequence", "2"]).status == 0)
        // Corrupt block 3, copy block 4 over block 6, and put back block 9 from pass 1.
        try TestSupport.referenceWrite(path, Array("garbage".utf8), at: Int64(3 * block + 500))
        try TestSupport.referenceWrite(path, try TestSupport.referenceRead(path, count: block, at: Int64(4 * block)), at: Int64(6 * block))
        try TestSupport.referenceWrite(path, Array(firstPass[9 * block..<10 * block]), at: Int64(9 * block))
        let (status, json) = try verify(path, ["--size", "4m", "--sequence", "2", "--phase", "verify"])
        #expect(status != 0)
        #expect(json["corrupt"] as? Int == 1)
        #expect(json["misplaced"] as? Int == 1)
        #expect(json["lost"] as? Int == 1)
        #expect(json["mismatches"] as? Int == 3)
    }
}
