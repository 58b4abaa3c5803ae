import Foundation
import Glibc
import Testing
@testable import DirectIO

/// `dio copy`: every strategy, the JSON report, modes, replacing, and never a partial DST.
@Suite struct CopyCommandTests {
    private func copy(_ arguments: [String]) throws -> (status: Int32, json: [String: Any]?, error: String) {
        let result = try TestSupport.run([TestSupport.dioExecutable, "copy", "--json"] + arguments)
        return (result.status, result.status == 0 ? try TestSupport.json(result.output) : nil, result.error)
    }

    /// Names in `directory` other than the ones given: leftover temporary files.
    private func strayFiles(in directory: String, besides expected: Set<String>) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).filter { !expected.contains($0) }
    }

    @Test func everyStrategyCopiesAndReportsItselfInJSON() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let source = directory + "/src"
        let bytes = try TransferFixture.makeFile(source, size: (3 << 20) + 1234, seed: 4)
        try #require(chmod(source, 0o640) == 0)
        for strategy in ["auto", "copy-range", "splice", "sendfile", "direct", "buffered"] {
            let destination = directory + "/dst-\(strategy)"
            let (status, json, error) = try copy([source, destination, "--strategy", strategy, "--verify"])
            try #require(status == 0, "\(strategy): \(error)")
            let report = try #require(json)
            #expect(report["strategy"] as? String == (strategy == "auto" ? "copy-range" : strategy))
            #expect(report["bytes"] as? Int == bytes.count)
            #expect(report["userSpaceCopies"] as? Int == (strategy == "buffered" ? bytes.count : 0))
            #expect((report["bytesPerSecond"] as? Double ?? 0) > 0)
            #expect(report["verified"] as? Bool == true)
            let skipped = try #require(report["skipped"] as? [[String: Any]])
            if strategy == "auto" {
                #expect(skipped.first?["strategy"] as? String == "reflink")
                #expect((skipped.first?["reason"] as? String)?.isEmpty == false)
            }
            TestSupport.expectSameBytes(try TestSupport.referenceRead(destination, count: bytes.count + 1), bytes, "dio copy --strategy \(strategy)")
            var info = stat()
            #expect(stat(destination, &info) == 0 && info.st_mode & 0o7777 == 0o640, "\(strategy) kept the mode")
        }
        #expect(try strayFiles(in: directory, besides: Set(["src"] + ["auto", "copy-range", "splice", "sendfile", "direct", "buffered"].map { "dst-\($0)" })).isEmpty)
    }

    @Test func anExistingDestinationIsReplacedWholeAndADirectoryReceivesTheFile() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let source = directory + "/src"
        let bytes = try TransferFixture.makeFile(source, size: 100_000, seed: 5)
        let destination = directory + "/dst"
        try TestSupport.referenceWrite(destination, TestSupport.pattern(count: 300_000, seed: 6))
        let (status, json, error) = try copy([source, destination])
        try #require(status == 0, "\(error)")
        #expect(json?["replacedExisting"] as? Bool == true)
        TestSupport.expectSameBytes(try TestSupport.referenceRead(destination, count: 300_001), bytes, "replaced destination")
        let into = directory + "/into"
        try FileManager.default.createDirectory(atPath: into, withIntermediateDirectories: false)
        let (intoStatus, intoJSON, _) = try copy([source, into])
        #expect(intoStatus == 0)
        #expect(intoJSON?["destination"] as? String == into + "/src")
        TestSupport.expectSameBytes(try TestSupport.referenceRead(into + "/src", count: 100_001), bytes, "copy into a directory")
    }

    @Test func badInputFailsClearlyAndReplacesNothing() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let source = directory + "/src"
        try TransferFixture.makeFile(source, size: 5000, seed: 7)
        let missing = try TestSupport.run([TestSupport.dioExecutable, "copy", directory + "/absent", directory + "/x"])
        #expect(missing.status == 1)
        #expect(missing.error.contains("absent") && missing.error.contains("nothing was replaced"))
        let same = try TestSupport.run([TestSupport.dioExecutable, "copy", source, source])
        #expect(same.status == 1 && same.error.contains("same file"))
        let noDirectory = try TestSupport.run([TestSupport.dioExecutable, "copy", source, directory + "/no/such/dir/x"])
        #expect(noDirectory.status == 1 && noDirectory.error.contains(directory + "/no/such/dir"))
        let folder = try TestSupport.run([TestSupport.dioExecutable, "copy", directory, directory + "/x"])
        #expect(folder.status == 1 && folder.error.contains("directories"))
        let reflink = try TestSupport.run([TestSupport.dioExecutable, "copy", "--strategy", "reflink", source, directory + "/x"])
        #expect(reflink.status == 1 && reflink.error.contains("FICLONE"))
        #expect(try strayFiles(in: directory, besides: ["src"]).isEmpty)
    }

    @Test func sigkillMidwayLeavesTheDestinationAsItWasOrComplete() throws {
        // RELIABILITY: kill -9 during dio copy. O_TMPFILE means a killed copy has no name to
        // leave behind; the old destination survives until the finished copy replaces it.
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let source = directory + "/src"
        let bytes = try TransferFixture.makeFile(source, size: 48 << 20, seed: 8)
        let destination = directory + "/dst"
        let old = TestSupport.pattern(count: 4096, seed: 9)
        var outcomes: [String: Int] = [:]
        var abandoned: [String] = []
        for (round, strategy) in ["direct", "buffered", "splice", "direct", "buffered", "splice"].enumerated() {
            try TestSupport.referenceWrite(destination, old)
            try #require(truncate(destination, 4096) == 0)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: TestSupport.dioExecutable)
            // Small buffers make the copy slow enough to be caught midway.
            process.arguments = ["copy", "--strategy", strategy, "--buffers", "1", "--buffer-size", "4k", source, destination]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            usleep(UInt32(20_000 + 15_000 * round))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let size = (try? FileManager.default.attributesOfItem(atPath: destination)[.size] as? Int) ?? -1
            let now = try TestSupport.referenceRead(destination, count: bytes.count + 1)
            if now == old {
                outcomes["untouched", default: 0] += 1
            } else {
                TestSupport.expectSameBytes(now, bytes, "destination after SIGKILL of --strategy \(strategy) (size \(size))")
                outcomes["complete", default: 0] += 1
            }
            // Replacing "dst" takes a hidden name between linkat and rename: a kill in that
            // instant leaves it (the next copy to "dst" removes it, checked below). Nothing
            // else may be left.
            let stray = try strayFiles(in: directory, besides: ["src", "dst"])
            #expect(stray.allSatisfy { $0.hasPrefix(".dst.dio-\(process.processIdentifier)-") }, "round \(round) (--strategy \(strategy)) left \(stray)")
            if !stray.isEmpty { abandoned += stray }
        }
        #expect(outcomes["untouched", default: 0] > 0, "no copy was caught midway: \(outcomes)")
        // A copy that finishes clears what killed ones abandoned.
        #expect(FileManager.default.createFile(atPath: directory + "/.dst.dio-999999999-1", contents: Data("stale".utf8)))
        let finished = try TestSupport.run([TestSupport.dioExecutable, "copy", source, destination])
        #expect(finished.status == 0, "\(finished.error)")
        #expect(try strayFiles(in: directory, besides: ["src", "dst"]).isEmpty, "abandoned earlier: \(abandoned)")
        TestSupport.expectSameBytes(try TestSupport.referenceRead(destination, count: bytes.count + 1), bytes, "destination after a finished copy")
    }

    @Test func sigintCancelsAndCleansUp() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let source = directory + "/src"
        try TransferFixture.makeFile(source, size: 32 << 20, seed: 10)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestSupport.dioExecutable)
        process.arguments = ["copy", "--strategy", "buffered", "--buffer-size", "4k", source, directory + "/dst"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        usleep(30_000)
        kill(process.processIdentifier, SIGINT)
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus == 0 {
            // It finished before the signal: then the copy must be whole.
            #expect(try TestSupport.referenceRead(directory + "/dst", count: 33 << 20).count == 32 << 20)
        } else {
            #expect(process.terminationStatus == 130)
            #expect(message.contains("interrupted") && message.contains("nothing was replaced"), "\(message)")
            #expect(access(directory + "/dst", F_OK) != 0)
        }
        #expect(try strayFiles(in: directory, besides: ["src", "dst"]).isEmpty)
    }
}
