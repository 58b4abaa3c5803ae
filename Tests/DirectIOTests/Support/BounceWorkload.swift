import Glibc
import Testing
@testable import DirectIO
import DIOCommands

/// Random reads and writes at any memory alignment, file offset and length, through
/// DirectFile, checked against a model of the file and, at the end, against pread.
enum BounceWorkload {
    /// - Parameters:
    ///   - fixedSize: for block devices: the size never changes and nothing is written past it.
    static func run(path: String, engine: IOEngine, operations: Int, span: Int, seed: UInt64, fixedSize: Int? = nil) throws {
        var random = SplitMix(seed: seed)
        let initial = TestSupport.pattern(count: fixedSize.map { min($0, span) } ?? span / 2, seed: seed ^ 0x1111)
        try TestSupport.referenceWrite(path, initial)
        var model = initial
        if let fixedSize, fixedSize > model.count {
            model += try TestSupport.referenceRead(path, count: min(fixedSize, span) - model.count, at: Int64(model.count))
        }
        let file = try DirectFile(path: path, options: OpenOptions(create: fixedSize == nil), engine: engine)
        let arena = try AlignedBuffer(byteCount: 4 * span + 65536)
        let statsBefore = engine.statistics
        for step in 0..<operations {
            let limit = fixedSize.map { min($0, span) } ?? span
            let offset = Int(random.next() % UInt64(limit - 1))
            let length = 1 + Int(random.next() % UInt64(min(70_000, limit - offset)))
            let segmentCount = 1 + Int(random.next() % 3)
            // Cut `length` into segments at random points, each at its own misalignment.
            var cuts = (1..<segmentCount).map { _ in Int(random.next() % UInt64(length)) }.sorted()
            cuts = [0] + cuts + [length]
            var segments: [UnsafeMutableRawBufferPointer] = []
            var place = 0
            for index in 0..<segmentCount where cuts[index + 1] > cuts[index] {
                // Aligned memory, memory misaligned like the file offset (so its middle can go
                // direct), or misaligned at random (bounced whole).
                let fileOffset = offset + cuts[index]
                let misalignment = switch random.next() % 3 {
                case 0: 0
                case 1: fileOffset % 4096
                default: Int(random.next() % 4096)
                }
                let start = place + misalignment
                segments.append(UnsafeMutableRawBufferPointer(start: arena.baseAddress + start, count: cuts[index + 1] - cuts[index]))
                place = (start + cuts[index + 1] - cuts[index] + 4095) / 4096 * 4096
            }
            if random.next() % 2 == 0 {
                let bytes = TestSupport.pattern(count: length, seed: seed &+ UInt64(step))
                var consumed = 0
                for segment in segments {
                    segment.copyBytes(from: bytes[consumed..<consumed + segment.count])
                    consumed += segment.count
                }
                let written = segments.count == 1
                    ? try file.write(UnsafeRawBufferPointer(segments[0]), at: Int64(offset))
                    : try file.write(segments.map { UnsafeRawBufferPointer($0) }, at: Int64(offset))
                #expect(written == length, "step \(step): wrote \(written) of \(length)")
                if offset + length > model.count { model += [UInt8](repeating: 0, count: offset + length - model.count) }
                model.replaceSubrange(offset..<offset + length, with: bytes)
            } else {
                for segment in segments { segment.initializeMemory(as: UInt8.self, repeating: 0xCD) }
                let got = segments.count == 1
                    ? try file.read(into: segments[0], at: Int64(offset))
                    : try file.read(into: segments, at: Int64(offset))
                let expected = offset < model.count ? Array(model[offset..<min(model.count, offset + length)]) : []
                #expect(got == expected.count, "step \(step): read \(got), expected \(expected.count) at \(offset)+\(length)")
                let bytes = segments.flatMap { Array(UnsafeRawBufferPointer($0)) }
                TestSupport.expectSameBytes(Array(bytes.prefix(got)), Array(expected.prefix(got)), "step \(step), read at \(offset)+\(length)")
            }
        }
        try file.sync()
        // A device has more bytes after the span; a file must end where the model ends.
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: model.count + (fixedSize == nil ? 1 : 0)), model, "final file against the model")
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
}
