import Foundation
import Glibc
import Testing
@testable import DirectIO

/// Shapes of source file every strategy must copy byte for byte.
enum TransferFixture {
    /// Sizes that are and are not multiples of 4096, around the pipe and buffer sizes.
    static let sizes = [0, 1, 4095, 4096, 3 * 4096 + 17, (1 << 20) + 4096, (5 << 20) + 123]

    /// Writes `size` pattern bytes to `path`; returns them.
    @discardableResult
    static func makeFile(_ path: String, size: Int, seed: UInt64) throws -> [UInt8] {
        let bytes = TestSupport.pattern(count: size, seed: seed)
        unlink(path)
        try TestSupport.referenceWrite(path, bytes)
        return bytes
    }

    /// A sparse file: data, a 1 MiB hole, data, and a trailing hole to 4 MiB + 100 bytes.
    /// Returns its bytes (holes as zeros).
    static func makeSparseFile(_ path: String, seed: UInt64) throws -> [UInt8] {
        unlink(path)
        let first = TestSupport.pattern(count: 65536, seed: seed)
        let second = TestSupport.pattern(count: 65536 + 300, seed: seed + 1)
        try TestSupport.referenceWrite(path, first, at: 0)
        try TestSupport.referenceWrite(path, second, at: 2 << 20)
        let size = (4 << 20) + 100
        try #require(truncate(path, off_t(size)) == 0)
        var expected = [UInt8](repeating: 0, count: size)
        expected.replaceSubrange(0..<first.count, with: first)
        expected.replaceSubrange((2 << 20)..<(2 << 20) + second.count, with: second)
        return expected
    }

    /// Bytes of disk the file occupies (st_blocks × 512).
    static func allocatedBytes(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_blocks) * 512 : -1
    }

    /// Copies `source` to `destination` (created fresh) with `strategy` through the API.
    static func copy(_ source: String, _ destination: String, strategy: TransferStrategy?, options: TransferOptions = TransferOptions()) throws -> TransferReport {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        try #require(input >= 0, "open \(source): errno \(errno)")
        defer { close(input) }
        unlink(destination)
        let output = open(destination, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        try #require(output >= 0, "open \(destination): errno \(errno)")
        defer { close(output) }
        var options = options
        options.strategy = strategy
        return try Transfer.run(from: TransferEndpoint(descriptor: input, label: source), to: TransferEndpoint(descriptor: output, label: destination), options: options)
    }

    /// Every file → file strategy, forced in turn, over every size and the sparse file, in
    /// `directory`; reflink only where `reflinks` (it is refused elsewhere, which is checked).
    static func checkEveryStrategy(in directory: String, reflinks: Bool, seed: UInt64) throws {
        let strategies: [TransferStrategy] = [.copyRange, .splice, .sendfile, .direct, .buffered] + (reflinks ? [.reflink] : [])
        for strategy in strategies {
            for size in sizes {
                let source = directory + "/src-\(size)"
                let bytes = try makeFile(source, size: size, seed: seed &+ UInt64(size))
                let destination = directory + "/dst-\(strategy)-\(size)"
                let report = try copy(source, destination, strategy: strategy)
                #expect(report.bytes == Int64(size), "\(strategy) \(size)")
                #expect(report.userSpaceCopies == (strategy == .buffered ? Int64(size) : 0), "\(strategy) \(size)")
                TestSupport.expectSameBytes(try TestSupport.referenceRead(destination, count: size + 1), bytes, "\(strategy) copy of \(size) bytes in \(directory)")
                unlink(destination)
            }
            let sparse = directory + "/sparse"
            let expected = try makeSparseFile(sparse, seed: seed)
            let destination = directory + "/dst-\(strategy)-sparse"
            let report = try copy(sparse, destination, strategy: strategy)
            #expect(report.bytes == Int64(expected.count) || strategy != .reflink && report.bytes < Int64(expected.count))
            TestSupport.expectSameBytes(try TestSupport.referenceRead(destination, count: expected.count + 1), expected, "\(strategy) copy of a sparse file in \(directory)")
            // 4 MiB of logical size, under 1 MiB of data: the holes must stay holes.
            #expect(allocatedBytes(destination) < 1 << 20, "\(strategy) filled the holes: \(allocatedBytes(destination)) bytes allocated")
            unlink(destination)
        }
        if !reflinks {
            let source = directory + "/src-4096"
            try makeFile(source, size: 4096, seed: seed)
            #expect(throws: DirectIOError.self) { try copy(source, directory + "/dst-reflink", strategy: .reflink) }
        }
    }
}

@Suite struct TransferTests {
    @Test func everyStrategyCopiesByteExactOnExt4() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        try TransferFixture.checkEveryStrategy(in: directory, reflinks: false, seed: 11)
    }

    @Test func automaticPicksCopyRangeOnExt4AndSaysWhyReflinkWasSkipped() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let bytes = try TransferFixture.makeFile(directory + "/a", size: 3 << 20, seed: 3)
        let report = try TransferFixture.copy(directory + "/a", directory + "/b", strategy: nil)
        #expect(report.strategy == .copyRange)
        #expect(report.userSpaceCopies == 0)
        let reflink = try #require(report.skipped.first)
        #expect(reflink.strategy == .reflink)
        #expect(reflink.reason.contains("FICLONE"))
        TestSupport.expectSameBytes(try TestSupport.referenceRead(directory + "/b", count: bytes.count + 1), bytes, "auto copy")
    }

    @Test func rangesAtOffsetsOverwriteOnlyTheirBytesAndPunchHolesOverOldData() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let sparse = try TransferFixture.makeSparseFile(directory + "/s", seed: 5)
        for strategy in [TransferStrategy.copyRange, .splice, .sendfile, .direct, .buffered] {
            // The destination starts full of other bytes: the copy must leave zeros where the
            // source has holes, and the bytes outside the range untouched.
            let old = TestSupport.pattern(count: 6 << 20, seed: 99)
            let destination = directory + "/d-\(strategy)"
            unlink(destination)
            try TestSupport.referenceWrite(destination, old)
            let input = open(directory + "/s", O_RDONLY)
            let output = open(destination, O_RDWR)
            defer { close(input); close(output) }
            let count: Int64 = (3 << 20) + 5
            let report = try Transfer.run(from: TransferEndpoint(descriptor: input), sourceOffset: 4096, to: TransferEndpoint(descriptor: output), destinationOffset: 8192,
                                          count: count, options: TransferOptions(strategy: strategy))
            #expect(report.bytes <= count)
            var expected = old
            expected.replaceSubrange(8192..<8192 + Int(count), with: sparse[4096..<4096 + Int(count)])
            TestSupport.expectSameBytes(try TestSupport.referenceRead(destination, count: old.count + 1), expected, "\(strategy) range copy")
        }
    }

    @Test func progressIsReportedAndCancellationStopsWithTheOffset() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        try TransferFixture.makeFile(directory + "/a", size: 8 << 20, seed: 8)
        for strategy in [TransferStrategy.splice, .direct, .buffered] {
            let seen = ProgressLog()
            let report = try TransferFixture.copy(directory + "/a", directory + "/b", strategy: strategy,
                                                  options: TransferOptions(progress: { done, total in seen.add(done, total) }))
            #expect(report.bytes == 8 << 20)
            let calls = seen.calls
            #expect(calls.count > 1, "\(strategy)")
            #expect(calls.last?.0 == 8 << 20 && calls.last?.1 == 8 << 20)
            #expect(zip(calls, calls.dropFirst()).allSatisfy { $0.0 <= $1.0 }, "progress never goes back")

            let cancellation = TransferCancellation()
            let error = #expect(throws: DirectIOError.self) {
                try TransferFixture.copy(directory + "/a", directory + "/c", strategy: strategy,
                                         options: TransferOptions(progress: { done, _ in if done >= 2 << 20 { cancellation.cancel() } }, cancellation: cancellation))
            }
            #expect(error?.code == .cancelled, "\(strategy)")
            #expect(error?.offset != nil)
        }
    }

    @Test func badInputIsRefusedWithTheOperationAndNothingIsWritten() throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        try TransferFixture.makeFile(directory + "/a", size: 4096, seed: 1)
        let input = open(directory + "/a", O_RDONLY)
        defer { close(input) }
        let output = open(directory + "/b", O_RDWR | O_CREAT, 0o644)
        defer { close(output) }
        let source = try TransferEndpoint(descriptor: input, label: "a")
        let destination = try TransferEndpoint(descriptor: output, label: "b")
        let negative = #expect(throws: DirectIOError.self) { try Transfer.run(from: source, sourceOffset: -1, to: destination) }
        #expect(negative?.code == .invalidArgument)
        // A socket-only strategy for two files.
        let unsuitable = #expect(throws: DirectIOError.self) { try Transfer.run(from: source, to: destination, options: TransferOptions(strategy: .zeroCopySend)) }
        #expect(unsuitable?.code == .unsupported)
        #expect(unsuitable?.detail?.contains("socket") == true)
        // Writing into a read-only descriptor.
        let readOnly = try TransferEndpoint(descriptor: input, label: "a")
        for strategy in [TransferStrategy.copyRange, .splice, .sendfile, .buffered] {
            #expect(throws: DirectIOError.self, "\(strategy)") { try Transfer.run(from: source, to: readOnly, options: TransferOptions(strategy: strategy)) }
        }
        #expect(TransferFixture.allocatedBytes(directory + "/b") == 0)
        #expect(throws: DirectIOError.self) { try TransferEndpoint(descriptor: 9999) }
    }
}

/// Progress calls, gathered from the transferring thread.
final class ProgressLog: @unchecked Sendable {
    // Unchecked: the lock guards `entries`, the only state.
    private let lock = NSLock()
    private var entries: [(Int64, Int64?)] = []
    func add(_ done: Int64, _ total: Int64?) { lock.withLock { entries.append((done, total)) } }
    var calls: [(Int64, Int64?)] { lock.withLock { entries } }
}
