import Foundation
import Glibc
import Testing
@testable import DirectIO
@testable import DirectIOLog

/// The durable log on xfs over a 4 KiB-sector loop device: threads and tasks append at once,
/// every acknowledged record is in the file at its position (read back with plain pread, not
/// through the log), and reopening finds them all.
extension SystemTests {
    @Test(.enabled(if: TestSupport.which("mkfs.xfs") != nil, "mkfs.xfs not installed (apt-get install xfsprogs)"))
    func theLogOnXfsHoldsEveryAcknowledgedRecord() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let filesystem = try MountedFilesystem.make("xfs", megabytes: 320, sectorSize: 4096, in: directory)
        defer { filesystem.unmount() }
        let path = filesystem.mountPoint + "/wal"
        let runtime = try IORuntime(rings: 1, queueDepth: 16)
        let log = try DurableLog(path: path, runtime: runtime, bufferBytes: 64 << 10, growthBytes: 256 << 10)
        #expect(log.blockBytes == 4096)
        let fromThreads = ConditionLock<[(Int64, [UInt8])]>([])
        let threads = DispatchGroup()
        for thread in 0..<2 {
            DispatchQueue.global().async(group: threads) {
                for index in 0..<150 {
                    let record = TestSupport.pattern(count: 1 + (index * 37 + thread * 1000) % 9000, seed: UInt64(5000 + thread * 1000 + index))
                    if let position = try? log.append(record) { fromThreads.withLock { $0.append((position, record)) } }
                }
            }
        }
        let fromTasks = try await withThrowingTaskGroup(of: [(Int64, [UInt8])].self) { group in
            for task in 0..<8 {
                group.addTask {
                    var mine: [(Int64, [UInt8])] = []
                    for index in 0..<40 {
                        let record = TestSupport.pattern(count: 1 + (index * 131 + task * 7) % 9000, seed: UInt64(task * 1000 + index))
                        mine.append((try await log.append(record), record))
                    }
                    return mine
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        threads.wait()
        await runtime.shutdown()
        let appended = (fromTasks + fromThreads.withLock { $0 }).sorted { $0.0 < $1.0 }
        let expectedCount = 8 * 40 + 2 * 150
        #expect(appended.count == expectedCount)
        let raw = try TestSupport.referenceRead(path, count: Int(log.end))
        for (position, record) in appended {
            let start = Int(position)
            let length = raw.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: start, as: UInt32.self))) }
            let payloadStart = start + LogRecord.headerBytes
            let stored = Array(raw[payloadStart..<min(payloadStart + record.count, raw.count)])
            #expect(length == record.count && stored == record, "the record at \(position) is not in the file as appended")
        }
        let reopened = try DurableLog(path: path, bufferBytes: 64 << 10)
        #expect(try reopened.records().map(\.payload) == appended.map(\.1))
    }
}
