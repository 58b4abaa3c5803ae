import Glibc
import Testing
@testable import DirectIO
import DIOCommands

/// Random reads and writes at any memory alignment, file offset and length, checked against a
/// model of the file and, at the end, against pread: once through `DirectFile`, once through
/// `AsyncFile`, with the same steps.
enum BounceWorkload {
    /// Through DirectFile on `engine`; its statistics must match the engine's.
    /// - Parameters:
    ///   - fixedSize: for block devices: the size never changes and nothing is written past it.
    static func run(path: String, engine: IOEngine, operations: Int, span: Int, seed: UInt64, fixedSize: Int? = nil) throws {
        var model = try Model(path: path, span: span, seed: seed, fixedSize: fixedSize)
        let file = try DirectFile(path: path, options: OpenOptions(create: fixedSize == nil), engine: engine)
        let statsBefore = engine.statistics
        for index in 0..<operations {
            let step = model.next(index)
            let segments = step.segments
            let moved = switch (step.isWrite, segments.count == 1) {
            case (true, true): try file.write(UnsafeRawBufferPointer(segments[0]), at: step.offset)
            case (true, false): try file.write(segments.map { UnsafeRawBufferPointer($0) }, at: step.offset)
            case (false, true): try file.read(into: segments[0], at: step.offset)
            case (false, false): try file.read(into: segments, at: step.offset)
            }
            model.check(step, moved: moved)
        }
        try file.sync()
        try model.checkFile()
        let stats = engine.statistics
        // This file is the engine's only one: its counts are the engine's.
        #expect(file.statistics == TransferStatistics(
            bytesDirect: stats.transfers.bytesDirect - statsBefore.transfers.bytesDirect, bytesBounced: stats.transfers.bytesBounced - statsBefore.transfers.bytesBounced,
            bytesShifted: stats.transfers.bytesShifted - statsBefore.transfers.bytesShifted, readModifyWriteBlocks: stats.transfers.readModifyWriteBlocks - statsBefore.transfers.readModifyWriteBlocks))
        if file.limits.offsetAlignment > 1 && file.isDirect {
            #expect(stats.transfers.bytesBounced > statsBefore.transfers.bytesBounced && stats.transfers.bytesDirect > statsBefore.transfers.bytesDirect)
            #expect(stats.transfers.readModifyWriteBlocks > statsBefore.transfers.readModifyWriteBlocks)
        } else {
            // Alignment 1 (tmpfs): everything goes straight through, nothing is bounced.
            #expect(stats.transfers.bytesBounced == statsBefore.transfers.bytesBounced)
        }
    }

    /// The same workload through AsyncFile on `runtime`.
    static func run(path: String, runtime: IORuntime, operations: Int, span: Int, seed: UInt64, fixedSize: Int? = nil) async throws {
        var model = try Model(path: path, span: span, seed: seed, fixedSize: fixedSize)
        let file = try AsyncFile(path: path, options: OpenOptions(create: fixedSize == nil), runtime: runtime)
        for index in 0..<operations {
            let step = model.next(index)
            let segments = step.segments
            let moved = switch (step.isWrite, segments.count == 1) {
            case (true, true): try await file.write(UnsafeRawBufferPointer(segments[0]), at: step.offset)
            case (true, false): try await file.write(segments.map { UnsafeRawBufferPointer($0) }, at: step.offset)
            case (false, true): try await file.read(into: segments[0], at: step.offset)
            case (false, false): try await file.read(into: segments, at: step.offset)
            }
            model.check(step, moved: moved)
        }
        try await file.sync()
        try model.checkFile()
        let stats = file.statistics
        if file.limits.offsetAlignment > 1 && file.isDirect {
            #expect(stats.bytesBounced > 0 && stats.bytesDirect > 0 && stats.readModifyWriteBlocks > 0, "\(stats)")
        } else {
            #expect(stats.bytesBounced == 0, "\(stats)")
        }
    }

    struct Step {
        var index: Int
        var offset: Int64
        var length: Int
        var isWrite: Bool
        var segments: [UnsafeMutableRawBufferPointer]
        var bytes: [UInt8]
    }

    /// The file as it must be, the random steps, and the memory they use.
    struct Model: ~Copyable {
        let path: String
        let span: Int
        let seed: UInt64
        let fixedSize: Int?
        var random: SplitMix
        var bytes: [UInt8]
        let arena: AlignedBuffer

        init(path: String, span: Int, seed: UInt64, fixedSize: Int?) throws {
            let initial = TestSupport.pattern(count: fixedSize.map { min($0, span) } ?? span / 2, seed: seed ^ 0x1111)
            try TestSupport.referenceWrite(path, initial)
            var bytes = initial
            if let fixedSize, fixedSize > bytes.count {
                bytes += try TestSupport.referenceRead(path, count: min(fixedSize, span) - bytes.count, at: Int64(bytes.count))
            }
            // Made last: a noncopyable field must not be set before a call that may throw.
            let arena = try AlignedBuffer(byteCount: 4 * span + 65536)
            self.path = path
            self.span = span
            self.seed = seed
            self.fixedSize = fixedSize
            self.random = SplitMix(seed: seed)
            self.bytes = bytes
            self.arena = arena
        }

        mutating func next(_ index: Int) -> Step {
            let limit = fixedSize.map { min($0, span) } ?? span
            let offset = Int(random.next() % UInt64(limit - 1))
            let length = 1 + Int(random.next() % UInt64(min(70_000, limit - offset)))
            let segmentCount = 1 + Int(random.next() % 3)
            // Cut `length` into segments at random points, each at its own misalignment.
            var cuts = (1..<segmentCount).map { _ in Int(random.next() % UInt64(length)) }.sorted()
            cuts = [0] + cuts + [length]
            var segments: [UnsafeMutableRawBufferPointer] = []
            var place = 0
            for segment in 0..<segmentCount where cuts[segment + 1] > cuts[segment] {
                // Aligned memory, memory misaligned like the file offset (so its middle can go
                // direct), or misaligned at random (bounced whole).
                let fileOffset = offset + cuts[segment]
                let misalignment = switch random.next() % 3 {
                case 0: 0
                case 1: fileOffset % 4096
                default: Int(random.next() % 4096)
                }
                let start = place + misalignment
                segments.append(UnsafeMutableRawBufferPointer(start: arena.baseAddress + start, count: cuts[segment + 1] - cuts[segment]))
                place = (start + cuts[segment + 1] - cuts[segment] + 4095) / 4096 * 4096
            }
            let isWrite = random.next() % 2 == 0
            var data: [UInt8] = []
            if isWrite {
                data = TestSupport.pattern(count: length, seed: seed &+ UInt64(index))
                var consumed = 0
                for segment in segments {
                    segment.copyBytes(from: data[consumed..<consumed + segment.count])
                    consumed += segment.count
                }
            } else {
                for segment in segments { segment.initializeMemory(as: UInt8.self, repeating: 0xCD) }
            }
            return Step(index: index, offset: Int64(offset), length: length, isWrite: isWrite, segments: segments, bytes: data)
        }

        mutating func check(_ step: Step, moved: Int) {
            let offset = Int(step.offset), length = step.length
            if step.isWrite {
                #expect(moved == length, "step \(step.index): wrote \(moved) of \(length)")
                if offset + length > bytes.count { bytes += [UInt8](repeating: 0, count: offset + length - bytes.count) }
                bytes.replaceSubrange(offset..<offset + length, with: step.bytes)
            } else {
                let expected = offset < bytes.count ? Array(bytes[offset..<min(bytes.count, offset + length)]) : []
                #expect(moved == expected.count, "step \(step.index): read \(moved), expected \(expected.count) at \(offset)+\(length)")
                let got = step.segments.flatMap { Array(UnsafeRawBufferPointer($0)) }
                TestSupport.expectSameBytes(Array(got.prefix(moved)), Array(expected.prefix(moved)), "step \(step.index), read at \(offset)+\(length)")
            }
        }

        /// A device has more bytes after the span; a file must end where the model ends.
        func checkFile() throws {
            TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: bytes.count + (fixedSize == nil ? 1 : 0)), bytes, "final file against the model")
        }
    }
}
