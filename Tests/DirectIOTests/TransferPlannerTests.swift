import PropertyBased
import Testing
@testable import DirectIO

/// The planner is pure: these tests check its plans against the definition of a correct plan,
/// with an independent (byte-by-byte, block-by-block) model of what each byte must become.
@Suite struct TransferPlannerTests {
    /// A page-aligned base for made-up caller addresses; no memory is touched.
    static let base: UInt = 0x7f00_0000_0000

    // MARK: Property: every plan is correct, within limits, and bounces only what it must

    @Test func randomPlansCoverEveryByteOnceWithinEveryLimit() async {
        let segment = zip(Gen.int(in: 0...4095), Gen.int(in: 0...12_000))  // empty segments take no part
        await propertyCheck(
            count: 1000,
            input: Gen.element(of: [1, 8, 512, 4096]), Gen.element(of: [1, 512, 4096]), Gen.int(in: 1...16).array(of: 4),
            segment.array(of: 1...5), Gen.int(in: 0...200_000), Gen.bool
        ) { memory, block, shape, segments, offset, isWrite in
            let memoryAlignment = memory ?? 512, offsetAlignment = block ?? 512
            let granule = max(memoryAlignment, offsetAlignment)
            let limits = PlanLimits(
                memoryAlignment: memoryAlignment, offsetAlignment: offsetAlignment,
                maxIOBytes: shape[0] * 4096, maxSegments: shape[1], maxSegmentBytes: shape[2] * granule,
                bounceBufferBytes: shape[3] * 4096)
            var callers: [CallerSegment] = []
            var address = Self.base
            for (misalignment, length) in segments {
                callers.append(CallerSegment(address: address + UInt(misalignment), length: length))
                address += UInt((misalignment + length + 8191) / 4096 * 4096)
            }
            Self.check(callers, fileOffset: Int64(offset), isWrite: isWrite, limits: limits)
        }
    }

    /// The shape most requests have (one buffer, a few KiB, any offset and memory): planned
    /// by the shortcut when all of it goes through the bounce buffer in one I/O, which `check`
    /// compares with the general steps.
    @Test func smallSingleBuffersPlanTheSameThroughTheShortcut() async {
        await propertyCheck(
            count: 1000,
            input: Gen.element(of: [1, 512, 4096]), Gen.element(of: [512, 4096]), Gen.int(in: 0...4095), Gen.int(in: 0...9000),
            Gen.int(in: 0...100_000), Gen.bool
        ) { memory, block, misalignment, length, offset, isWrite in
            let limits = PlanLimits(memoryAlignment: memory ?? 512, offsetAlignment: block ?? 512, maxIOBytes: 1 << 20, maxSegments: 128,
                                    maxSegmentBytes: 65536, bounceBufferBytes: 8192)
            Self.check([CallerSegment(address: Self.base + UInt(misalignment), length: length)], fileOffset: Int64(offset), isWrite: isWrite, limits: limits)
        }
    }

    /// Checks `plan` against the definition, failing the current test on any difference.
    static func check(_ segments: [CallerSegment], fileOffset: Int64, isWrite: Bool, limits: PlanLimits) {
        let plan: TransferPlan
        let general: TransferPlan
        var reused = dirtyPlan
        do {
            plan = try TransferPlanner.plan(segments: Self.segments(segments), fileOffset: fileOffset, isWrite: isWrite, limits: limits)
            // The single-buffer shortcut plans what the general steps plan, and a plan planned
            // into again (its lists' storage reused) holds nothing of its past.
            var full = TransferPlan()
            try TransferPlanner.plan(segments: Self.segments(segments), fileOffset: fileOffset, isWrite: isWrite, limits: limits, into: &full, shortcut: false)
            general = full
            try TransferPlanner.plan(segments: Self.segments(segments), fileOffset: fileOffset, isWrite: isWrite, limits: limits, into: &reused)
        } catch {
            Issue.record("planning failed: \(error)")
            return
        }
        #expect(plan == general, "shortcut plan \(plan) differs from the general plan \(general)")
        #expect(reused == plan)
        let block = Int64(limits.offsetAlignment)
        let total = segments.reduce(0) { $0 + $1.length }
        guard total > 0 else {
            // Nothing to move: nothing planned, not even the widening.
            #expect(plan == TransferPlan())
            return
        }
        let start = fileOffset, end = fileOffset + Int64(total)
        let first = start / block * block
        let last = (end + block - 1) / block * block

        // The caller address of every file byte, by walking the segments.
        func callerAddress(_ position: Int64) -> UInt {
            var segmentStart = start
            for segment in segments {
                if position < segmentStart + Int64(segment.length) { return segment.address + UInt(position - segmentStart) }
                segmentStart += Int64(segment.length)
            }
            return 0
        }

        // 1. The I/Os tile [first, last) exactly, each within every limit.
        var position = first
        var covered = [Int](repeating: 0, count: total)
        for (index, io) in plan.ios.enumerated() {
            #expect(io.fileOffset == position, "I/O \(index) starts at \(io.fileOffset), expected \(position)")
            #expect(io.fileOffset % block == 0 && io.length % Int(block) == 0 && io.length > 0)
            #expect(io.length <= limits.maxIOBytes, "I/O \(index) is \(io.length) bytes > \(limits.maxIOBytes)")
            #expect(io.pieces.count <= limits.maxSegments)
            #expect(io.length == plan.pieces[io.pieces].reduce(0) { $0 + $1.length })
            var piecePosition = io.fileOffset
            var bounceRanges: [Range<Int>] = []
            for piece in plan.pieces[io.pieces] {
                #expect(piece.length > 0 && piece.length <= limits.maxSegmentBytes && piece.length % Int(block) == 0)
                switch piece.memory {
                case .caller(let address):
                    #expect(address % UInt(limits.memoryAlignment) == 0, "direct piece at misaligned 0x\(String(address, radix: 16))")
                    // Direct bytes must be the caller's bytes for exactly these file positions.
                    #expect(piecePosition >= start && piecePosition + Int64(piece.length) <= end, "direct piece outside the caller's range")
                    for offset in stride(from: 0, to: piece.length, by: max(1, piece.length / 64)) {
                        #expect(callerAddress(piecePosition + Int64(offset)) == address + UInt(offset))
                    }
                    if piecePosition >= start && piecePosition + Int64(piece.length) <= end {
                        for offset in 0..<piece.length { covered[Int(piecePosition - start) + offset] += 1 }
                    }
                case .bounce(let offset):
                    #expect(offset % limits.granule == 0, "bounce piece at offset \(offset)")
                    #expect(offset + piece.length <= limits.bounceBufferBytes)
                    #expect(!bounceRanges.contains { $0.overlaps(offset..<offset + piece.length) })
                    bounceRanges.append(offset..<offset + piece.length)
                }
                piecePosition += Int64(piece.length)
            }
            position += Int64(io.length)
        }
        #expect(position == last)

        // 2. Every bounce copy moves caller bytes to the bounce position of the same file byte.
        for copy in plan.copies {
            let io = plan.ios[copy.io]
            var piecePosition = io.fileOffset
            var filePosition: Int64? = nil
            for piece in plan.pieces[io.pieces] {
                if case .bounce(let offset) = piece.memory, copy.bounceOffset >= offset, copy.bounceOffset + copy.length <= offset + piece.length {
                    filePosition = piecePosition + Int64(copy.bounceOffset - offset)
                }
                piecePosition += Int64(piece.length)
            }
            guard let filePosition else {
                Issue.record("copy \(copy) is not inside one bounce piece")
                continue
            }
            #expect(copy.fileOffset == filePosition)
            for offset in 0..<copy.length {
                let file = filePosition + Int64(offset)
                #expect(file >= start && file < end)
                if file >= start && file < end {
                    #expect(callerAddress(file) == copy.callerAddress + UInt(offset))
                    covered[Int(file - start)] += 1
                }
            }
        }
        // 3. Every caller byte exactly once, by DMA or by copy.
        #expect(covered.allSatisfy { $0 == 1 }, "bytes covered \(Set(covered)) times")

        // 4. Bounced bytes are exactly what alignment forces: model each segment's largest
        //    direct stretch by scanning its blocks for the first on aligned memory.
        var forcedDirect = 0
        var segmentStart = start
        for segment in segments {
            let low = (segmentStart + block - 1) / block * block
            let high = (segmentStart + Int64(segment.length)) / block * block
            var candidate = low
            while candidate < high && (segment.address + UInt(candidate - segmentStart)) % UInt(limits.memoryAlignment) != 0 {
                candidate += block
            }
            if candidate < high { forcedDirect += Int(high - candidate) }
            segmentStart += Int64(segment.length)
        }
        #expect(plan.bytesDirect == forcedDirect, "direct \(plan.bytesDirect), model \(forcedDirect)")
        #expect(plan.bytesDirect + plan.bytesBounced == total)
        #expect(plan.bytesWidened == Int(last - first) - total)

        // 5. A write reads exactly the blocks it covers only partly.
        var partial = Set<Int64>()
        if start % block != 0 { partial.insert(first) }
        if end % block != 0 { partial.insert((end - 1) / block * block) }
        let marked = plan.readBeforeWrite
        #expect(Set(marked.map(\.fileOffset)) == (isWrite ? partial : []))
        #expect(marked.count == (isWrite ? partial.count : 0))
        #expect(marked.allSatisfy { $0.length == Int(block) })
        // Each in the bounce piece of its I/O that holds that block.
        for block in marked {
            let io = plan.ios[block.io]
            var piecePosition = io.fileOffset
            var found = false
            for piece in plan.pieces[io.pieces] {
                if case .bounce(let offset) = piece.memory, block.fileOffset >= piecePosition, block.fileOffset < piecePosition + Int64(piece.length) {
                    found = block.bounceOffset == offset + Int(block.fileOffset - piecePosition)
                }
                piecePosition += Int64(piece.length)
            }
            #expect(found, "edge block \(block) is not where its I/O's bounce piece holds it")
        }
    }

    /// A plan with lists left over from another transfer, to plan into.
    static let dirtyPlan: TransferPlan = {
        var plan = TransferPlan()
        _ = try? TransferPlanner.plan(segments: .one(CallerSegment(address: base + 3, length: 300_000)), fileOffset: 7, isWrite: true, limits: virtio, into: &plan)
        return plan
    }()

    static func segments(_ array: [CallerSegment]) -> CallerSegments {
        array.count == 1 ? .one(array[0]) : .many(array)
    }

    // MARK: Examples

    static let virtio = PlanLimits(memoryAlignment: 512, offsetAlignment: 512, maxIOBytes: 4 << 20, maxSegments: 254, maxSegmentBytes: 1 << 30, bounceBufferBytes: 65536)
    static let loop4k = PlanLimits(memoryAlignment: 512, offsetAlignment: 4096, maxIOBytes: 1280 << 10, maxSegments: 128, maxSegmentBytes: 65536, bounceBufferBytes: 65536)

    @Test func anAlignedRequestIsOneDirectIOWithNothingBounced() throws {
        let plan = try TransferPlanner.plan(segments: .one(CallerSegment(address: Self.base, length: 1 << 20)), fileOffset: 1 << 20, isWrite: false, limits: Self.virtio)
        #expect(plan.ios == [DeviceIO(fileOffset: 1 << 20, length: 1 << 20, pieces: 0..<1)])
        #expect(plan.pieces == [DevicePiece(memory: .caller(address: Self.base), length: 1 << 20)])
        #expect(plan.readBeforeWrite.isEmpty)
        #expect(plan.bytesBounced == 0 && plan.copies.isEmpty)
    }

    @Test func anUnalignedOffsetBouncesOnlyTheEdgeBlocks() throws {
        // Caller memory and file offset misaligned by the same 100 bytes: the middle goes direct.
        let plan = try TransferPlanner.plan(segments: .one(CallerSegment(address: Self.base + 100, length: 100_000)), fileOffset: 100, isWrite: true, limits: Self.virtio)
        #expect(plan.bytesDirect == 100_000 - 412 - (100_100 % 512))
        #expect(plan.bytesBounced == 412 + 100_100 % 512)
        #expect(plan.readBeforeWrite.map(\.fileOffset) == [0, 100_100 / 512 * 512])
        Self.check([CallerSegment(address: Self.base + 100, length: 100_000)], fileOffset: 100, isWrite: true, limits: Self.virtio)
    }

    @Test func memoryMisalignedAgainstTheFileIsBouncedWhole() throws {
        // buffer+8 at an aligned offset: no byte of it can be DMA'd in place.
        let plan = try TransferPlanner.plan(segments: .one(CallerSegment(address: Self.base + 8, length: 1 << 20)), fileOffset: 0, isWrite: false, limits: Self.virtio)
        #expect(plan.bytesDirect == 0)
        #expect(plan.bytesBounced == 1 << 20)
        #expect(plan.ios.count == 16)  // 1 MiB through 64 KiB bounce buffers
    }

    @Test func theFourKiBLoopDeviceSplitsAtItsQueueLimits() throws {
        let segments = [CallerSegment(address: Self.base, length: 4 << 20)]
        let plan = try TransferPlanner.plan(segments: Self.segments(segments), fileOffset: 0, isWrite: true, limits: Self.loop4k)
        #expect(plan.ios.allSatisfy { $0.length <= 1280 << 10 && $0.pieces.count <= 128 && plan.pieces[$0.pieces].allSatisfy { $0.length <= 65536 } })
        #expect(plan.ios.reduce(0) { $0 + $1.length } == 4 << 20)
        #expect(plan.bytesBounced == 0)
        Self.check(segments, fileOffset: 0, isWrite: true, limits: Self.loop4k)
    }

    @Test func vectoredSegmentsThatContinueInMemoryMergeIntoOnePiece() throws {
        let segments: CallerSegments = .many([CallerSegment(address: Self.base, length: 4096), CallerSegment(address: Self.base + 4096, length: 8192)])
        let plan = try TransferPlanner.plan(segments: segments, fileOffset: 0, isWrite: false, limits: Self.virtio)
        #expect(plan.ios.count == 1)
        #expect(plan.pieces == [DevicePiece(memory: .caller(address: Self.base), length: 12288)])
    }

    @Test func badLimitsAreRefused() {
        var limits = Self.virtio
        limits.offsetAlignment = 768
        #expect(throws: DirectIOError.self) { _ = try TransferPlanner.plan(segments: .one(CallerSegment(address: Self.base, length: 1)), fileOffset: 0, isWrite: false, limits: limits) }
        #expect(throws: DirectIOError.self) { _ = try TransferPlanner.plan(segments: .one(CallerSegment(address: Self.base, length: 1)), fileOffset: -1, isWrite: false, limits: Self.virtio) }
    }
}
