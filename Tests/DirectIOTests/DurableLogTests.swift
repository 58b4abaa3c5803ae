import Foundation
import Glibc
import Testing
@testable import DirectIO
@testable import DirectIOLog
import DirectIOTesting
import DIOCommands

/// The durable append log: records from many threads, read back by position and after
/// reopening; power cuts at thousands of seeded points leave exactly a prefix of what was
/// appended, holding every record whose append returned.
@Suite struct DurableLogTests {
    @Test func recordsFromManyThreadsReadBackByPositionAndAfterReopening() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/wal"
        let log = try DurableLog(path: path, bufferBytes: 64 << 10)
        let appended = ConditionLock<[(Int64, [UInt8])]>([])
        let failures = ConditionLock<[String]>([])
        let group = DispatchGroup()
        for thread in 0..<4 {
            DispatchQueue.global().async(group: group) {
                var random = SplitMix(seed: UInt64(thread + 1))
                for index in 0..<150 {
                    let record = TestSupport.pattern(count: 1 + Int(random.next() % 9000), seed: UInt64(thread * 1000 + index))
                    do {
                        let position = try index % 10 == 9
                            ? log.append(contentsOf: [record, [UInt8](record.prefix(7))])[0]
                            : log.append(record)
                        appended.withLock { $0.append((position, record)) }
                    } catch {
                        failures.withLock { $0.append("\(error)") }
                    }
                }
            }
        }
        group.wait()
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
        let mine = appended.withLock { $0 }
        #expect(Set(mine.map(\.0)).count == mine.count, "two appends got one position")
        for (position, record) in mine {
            #expect(try log.read(at: position) == record)
        }
        // Everything, in position order, and the same after reopening.
        let all = try log.records()
        #expect(all.count == 600 + 60)  // the 60 batched appends add a second, 7-byte record each
        #expect(zip(all, all.dropFirst()).allSatisfy { $0.position < $1.position })
        let end = log.end
        let reopened = try DurableLog(path: path, bufferBytes: 64 << 10)
        #expect(reopened.end == end)
        let again = try reopened.records()
        #expect(again.map(\.position) == all.map(\.position) && again.map(\.payload) == all.map(\.payload))
        // Appends go on after the recovered end.
        let next = try reopened.append([1, 2, 3])
        let readBack = try reopened.read(at: next)
        #expect(next == end && readBack == [1, 2, 3])
        #expect(throws: DirectIOError.self) { _ = try reopened.read(at: next + 1) }
    }

    @Test func badRecordsAndForeignFilesAreRefused() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let log = try DurableLog(path: directory + "/wal", bufferBytes: 64 << 10)
        #expect(throws: DirectIOError.self) { _ = try log.append([]) }
        #expect(throws: DirectIOError.self) { _ = try log.append([UInt8](repeating: 1, count: log.maxRecordBytes + 1)) }
        #expect(try log.append([UInt8](repeating: 1, count: log.maxRecordBytes)) == log.firstPosition)
        let foreign = directory + "/table"
        let bytes = TestSupport.pattern(count: 8192, seed: 9)
        try TestSupport.referenceWrite(foreign, bytes)
        do {
            _ = try DurableLog(path: foreign)
            Issue.record("a file that is no log was opened as one")
        } catch {
            #expect(error.description.contains("not a DirectIO log"), "\(error)")
        }
        #expect(try TestSupport.referenceRead(foreign, count: 8192) == bytes)
    }

    /// A power cut during the n-th device write, for 1,000 seeded n and tear patterns: the
    /// reopened log holds a prefix of the records appended, in order, with every one whose
    /// append returned, and nothing else.
    @Test func powerCutsAtSeededPointsLeaveADurablePrefix() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        var sawLoss = 0, sawUnacknowledgedKept = 0
        for seed in UInt64(1)...1000 {
            let path = directory + "/wal\(seed % 8)"
            unlink(path)
            try TestSupport.referenceWrite(path, [])
            let device = MemoryDevice(writeCache: .init(logicalBlockSize: 512))
            var random = SplitMix(seed: seed)
            var attempted: [[UInt8]] = []
            var acknowledged = 0
            do {
                let log = try DurableLog(path: path, engine: .inMemory(device), bufferBytes: 16 << 10, growthBytes: 32 << 10)
                device.cutPower(duringWriteAfter: Int(random.next() % 12), seed: seed)
                while !device.isPoweredOff && attempted.count < 200 {
                    let count = 1 + Int(random.next() % 3)
                    let records = (0..<count).map { _ in TestSupport.pattern(count: 1 + Int(random.next() % 6000), seed: random.next()) }
                    attempted += records
                    _ = try count == 1 ? [log.append(records[0])] : log.append(contentsOf: records)
                    acknowledged = attempted.count
                }
            } catch {
                #expect(device.isPoweredOff, "seed \(seed): \(error) without a power cut")
            }
            device.restorePower()
            let recovered = try DurableLog(path: path, engine: .inMemory(device), bufferBytes: 16 << 10, growthBytes: 32 << 10).records().map(\.payload)
            #expect(recovered.count >= acknowledged, "seed \(seed): \(acknowledged) records were acknowledged, \(recovered.count) recovered")
            #expect(recovered.count <= attempted.count)
            #expect(recovered == Array(attempted.prefix(recovered.count)), "seed \(seed): the recovered records are not a prefix of the appended ones")
            if recovered.count < attempted.count { sawLoss += 1 }
            if recovered.count > acknowledged { sawUnacknowledgedKept += 1 }
        }
        // The cuts did cut: some appends were lost, some unacknowledged ones survived.
        #expect(sawLoss > 0 && sawUnacknowledgedKept > 0, "lost \(sawLoss), kept unacknowledged \(sawUnacknowledgedKept)")
    }

    /// Three opens in a row, each cut short during a write: every recovery is a prefix of all
    /// that was appended and keeps what the previous recovery found. Records of one size, so
    /// records of different opens start at the same positions.
    @Test func repeatedCutsAndReopensKeepAPrefix() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        for seed in UInt64(1)...300 {
            let path = directory + "/wal"
            unlink(path)
            try TestSupport.referenceWrite(path, [])
            let device = MemoryDevice(writeCache: .init(logicalBlockSize: 512))
            var random = SplitMix(seed: seed)
            var expected: [[UInt8]] = []
            for round in 0..<3 {
                var attempted: [[UInt8]] = []
                do {
                    let log = try DurableLog(path: path, engine: .inMemory(device), bufferBytes: 16 << 10, growthBytes: 32 << 10)
                    #expect(try log.records().map(\.payload) == expected, "seed \(seed) round \(round)")
                    device.cutPower(duringWriteAfter: Int(random.next() % 6), seed: seed &+ UInt64(round))
                    while !device.isPoweredOff {
                        // The first open writes big groups (a torn group leaves whole records
                        // past the end), later ones single records over the same positions.
                        let count = round == 0 ? 8 + Int(random.next() % 12) : 1
                        let records = (0..<count).map { _ in TestSupport.pattern(count: 700, seed: random.next()) }
                        attempted += records
                        _ = try log.append(contentsOf: records)
                    }
                } catch {}
                device.restorePower()
                let recovered = try DurableLog(path: path, engine: .inMemory(device), bufferBytes: 16 << 10, growthBytes: 32 << 10).records().map(\.payload)
                let all = expected + attempted
                #expect(recovered.count >= expected.count && recovered == Array(all.prefix(recovered.count)), "seed \(seed) round \(round)")
                expected = recovered
            }
        }
    }

    /// A record an earlier open left past the end, at exactly the position where the newer
    /// records end, checks by its checksum; its older epoch ends the log there.
    @Test func aRecordOfAnEarlierOpenNeverFollowsNewerOnes() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/wal"
        try TestSupport.referenceWrite(path, [])
        let device = MemoryDevice()
        let block = 4096
        var image = [UInt8](repeating: 0, count: 3 * block)
        image.withUnsafeMutableBytes { raw in
            LogRecord.encodeLogHeader(epoch: 2, into: raw.baseAddress!, blockBytes: block)
            var position = Int64(block)
            for (epoch, fill) in [(UInt32(1), UInt8(1)), (2, 2), (1, 3)] {
                let payload = [UInt8](repeating: fill, count: 100)
                payload.withUnsafeBytes { LogRecord.encode($0, position: position, epoch: epoch, into: raw.baseAddress! + Int(position)) }
                position += Int64(LogRecord.headerBytes + 100)
            }
        }
        #expect(device.setContents(image, ofFileAt: path))
        let log = try DurableLog(path: path, engine: .inMemory(device), bufferBytes: 16 << 10, growthBytes: 32 << 10)
        #expect(try log.records().map { $0.payload[0] } == [1, 2])
        #expect(log.end == Int64(block + 2 * (LogRecord.headerBytes + 100)))
    }

    /// A real file, a writer process killed with SIGKILL at a random moment mid-append
    /// (`dio log fill`, which prints each record once durable): reopened, the log holds a
    /// prefix of the writer's records with every one it printed.
    @Test func aWriterKilledMidAppendLeavesEveryPrintedRecord() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        for round in 0..<4 {
            let path = directory + "/wal\(round)"
            let seed = UInt64(round + 1), maxBytes = 6000
            let process = Process()
            process.executableURL = URL(fileURLWithPath: TestSupport.dioExecutable)
            process.arguments = ["log", "fill", path, "--count", "1000000", "--group", String(1 + round * 3), "--max-bytes", String(maxBytes), "--seed", String(seed)]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Let it append for a while (a different moment each round), then kill it.
            usleep(UInt32(150_000 + round * 70_000))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal, "round \(round): the writer ended before it was killed")
            let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                .split(separator: "\n").compactMap { line -> (Int, Int64)? in
                    let fields = line.split(separator: " ")
                    guard fields.count == 2, let index = Int(fields[0]), let position = Int64(fields[1]) else { return nil }
                    return (index, position)
                }
            #expect(printed.count > 10, "round \(round): only \(printed.count) records were durable before the kill")
            let recovered = try DurableLog(path: path).records()
            #expect(recovered.count >= printed.count, "round \(round): \(printed.count) printed, \(recovered.count) recovered")
            for (index, record) in recovered.enumerated() {
                #expect(record.payload == LogCommand.Fill.record(seed: seed, index: index, maxBytes: maxBytes), "round \(round): record \(index) is not the writer's")
            }
            for (index, position) in printed where index < recovered.count {
                #expect(recovered[index].position == position)
            }
        }
    }

    // MARK: Appends from tasks

    /// 32 tasks appending through the async calls while 2 threads append through the
    /// synchronous ones, on one log: every returned position holds its record, the log reads
    /// back in position order with nothing else in it, and so after reopening.
    @Test func tasksAndThreadsAppendToOneLog() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let path = directory + "/wal"
        let runtime = try IORuntime(rings: 2, queueDepth: 32)
        let log = try DurableLog(path: path, runtime: runtime, bufferBytes: 32 << 10, growthBytes: 64 << 10)
        let fromThreads = ConditionLock<[(Int64, [UInt8])]>([])
        let threads = DispatchGroup()
        for thread in 0..<2 {
            DispatchQueue.global().async(group: threads) {
                var random = SplitMix(seed: UInt64(100 + thread))
                for index in 0..<100 {
                    let record = TestSupport.pattern(count: 1 + Int(random.next() % 9000), seed: UInt64(100_000 + thread * 1000 + index))
                    if let position = try? log.append(record) { fromThreads.withLock { $0.append((position, record)) } }
                }
            }
        }
        let fromTasks = try await withThrowingTaskGroup(of: [(Int64, [UInt8])].self) { group in
            for task in 0..<32 {
                group.addTask {
                    var random = SplitMix(seed: UInt64(task + 1))
                    var mine: [(Int64, [UInt8])] = []
                    for index in 0..<25 {
                        let record = TestSupport.pattern(count: 1 + Int(random.next() % 9000), seed: UInt64(task * 1000 + index))
                        if index % 5 == 4 {
                            let positions = try await log.append(contentsOf: [record, [UInt8](record.prefix(9))])
                            mine += [(positions[0], record), (positions[1], [UInt8](record.prefix(9)))]
                        } else {
                            mine.append((try await log.append(record), record))
                        }
                    }
                    return mine
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        threads.wait()
        let appended = (fromTasks + fromThreads.withLock { $0 }).sorted { $0.0 < $1.0 }
        #expect(appended.count == 32 * 30 + 200)
        #expect(Set(appended.map(\.0)).count == appended.count, "two appends got one position")
        let all = try log.records()
        #expect(all.map(\.position) == appended.map(\.0))
        #expect(all.map(\.payload) == appended.map(\.1))
        let reopened = try DurableLog(path: path, bufferBytes: 32 << 10)
        #expect(try reopened.records().map(\.payload) == appended.map(\.1))
        #expect(reopened.end == log.end)
        await runtime.shutdown()
    }

    /// Power cuts while 4 tasks append on a runtime over the simulated device, 300 seeds: the
    /// reopened log holds only records some task appended, each once, in position order, with
    /// every record whose append returned at the position it returned.
    @Test func powerCutsDuringAsyncAppendsKeepEveryAcknowledgedRecord() async throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        var sawLoss = 0
        for seed in UInt64(1)...300 {
            let path = directory + "/wal\(seed % 4)"
            unlink(path)
            try TestSupport.referenceWrite(path, [])
            let device = MemoryDevice(writeCache: .init(logicalBlockSize: 512))
            let runtime = try IORuntime.inMemory(device)
            let log = try DurableLog(path: path, engine: .inMemory(device), runtime: runtime, bufferBytes: 16 << 10, growthBytes: 32 << 10)
            device.cutPower(duringWriteAfter: Int(seed % 10), seed: seed)
            let results = await withTaskGroup(of: (attempted: [[UInt8]], acknowledged: [(Int64, [UInt8])]).self) { group in
                for task in 0..<4 {
                    group.addTask {
                        var random = SplitMix(seed: seed &* 31 &+ UInt64(task))
                        var attempted: [[UInt8]] = [], acknowledged: [(Int64, [UInt8])] = []
                        while attempted.count < 60 {
                            let record = TestSupport.pattern(count: 1 + Int(random.next() % 5000), seed: random.next())
                            attempted.append(record)
                            guard let position = try? await log.append(record) else { break }
                            acknowledged.append((position, record))
                        }
                        return (attempted, acknowledged)
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            await runtime.shutdown()
            device.restorePower()
            let recovered = try DurableLog(path: path, engine: .inMemory(device), bufferBytes: 16 << 10, growthBytes: 32 << 10).records()
            let attempted = results.flatMap(\.attempted)
            let acknowledged = results.flatMap(\.acknowledged)
            let byPosition = Dictionary(recovered.map { ($0.position, $0.payload) }, uniquingKeysWith: { first, _ in first })
            for (position, record) in acknowledged {
                #expect(byPosition[position] == record, "seed \(seed): an acknowledged record at \(position) was not recovered")
            }
            #expect(recovered.count <= attempted.count)
            var unclaimed = attempted
            for record in recovered {
                guard let index = unclaimed.firstIndex(of: record.payload) else {
                    Issue.record("seed \(seed): a recovered record no task appended (or one appended once, recovered twice)")
                    break
                }
                unclaimed.remove(at: index)
            }
            if recovered.count < attempted.count { sawLoss += 1 }
        }
        #expect(sawLoss > 0, "no power cut lost anything")
    }
}
