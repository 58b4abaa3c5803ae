/// Turns caller memory and a file range into device I/Os that respect the device's limits:
/// the seed documents' scatter-gather planning, as a pure function (no I/O), so it can be
/// tested exhaustively.
///
/// Each caller segment's aligned middle goes straight to the device when the memory there is
/// aligned too; everything else (a misaligned head or tail, a segment whose memory is
/// misaligned relative to its file offset, the widening of the file range to whole blocks) goes
/// through a bounce buffer. A write whose first or last block the caller covers only partly
/// reads that block first (read-modify-write).
///
/// Limits: every device I/O starts and ends on the offset alignment, is at most `maxIOBytes`,
/// has at most `maxSegments` pieces of at most `maxSegmentBytes`, each starting on the memory
/// alignment, and uses at most one bounce buffer of `bounceBufferBytes`.
package enum TransferPlanner {
    private enum RunKind: Equatable {
        case direct(memory: UInt)
        case bounce
    }

    private struct Run {
        var start: Int64
        var end: Int64
        var kind: RunKind
    }

    /// Segments of length zero are allowed and take no part.
    package static func plan(segments: CallerSegments, fileOffset: Int64, isWrite: Bool, limits: PlanLimits) throws(DirectIOError) -> TransferPlan {
        var plan = TransferPlan()
        try self.plan(segments: segments, fileOffset: fileOffset, isWrite: isWrite, limits: limits, into: &plan)
        return plan
    }

    /// Plans into `plan`, reusing its lists' storage (a plan handed back after an earlier
    /// transfer: no allocation once the lists have grown to the usual shape).
    /// - Parameter shortcut: plan a single buffer that goes all through the bounce buffer in
    ///   one device I/O without the general steps (the same plan; tests compare both).
    package static func plan(segments: CallerSegments, fileOffset: Int64, isWrite: Bool, limits: PlanLimits, into plan: inout TransferPlan, shortcut: Bool = true) throws(DirectIOError) {
        plan.removeAll()
        if let problem = limits.problem {
            throw DirectIOError(.invalidArgument, operation: "plan transfer", offset: fileOffset, detail: problem)
        }
        let total = segments.total
        guard fileOffset >= 0, total > 0 else {
            if fileOffset < 0 { throw DirectIOError(.invalidArgument, operation: "plan transfer", offset: fileOffset, detail: "offset \(fileOffset) is negative") }
            return
        }
        let block = Int64(limits.offsetAlignment)
        let start = fileOffset
        let end = fileOffset + Int64(total)
        let first = alignDown(start, block)
        let last = alignUp(end, block)

        if shortcut, case .one(let segment) = segments, directRun(of: segment, at: start, limits: limits) == nil,
           Int(last - first) <= min(alignDown(limits.bounceBufferBytes, limits.offsetAlignment), alignDown(limits.maxIOBytes, limits.offsetAlignment),
                                    alignDown(limits.maxSegmentBytes, limits.granule)) {
            // The common shape (a small request, or memory misaligned against its offset): one
            // device I/O of the covering blocks, all in the bounce buffer from its start.
            plan.pieces.append(DevicePiece(memory: .bounce(offset: 0), length: Int(last - first)))
            plan.ios.append(DeviceIO(fileOffset: first, length: Int(last - first), pieces: 0..<1))
            plan.copies.append(BounceCopy(io: 0, fileOffset: start, bounceOffset: Int(start - first), callerAddress: segment.address, length: total))
        } else {
            let runs = self.runs(segments, from: start, covering: first..<last, limits: limits)
            cut(runs, limits: limits, into: &plan)
            addBounceCopies(segments: segments, from: start, to: &plan)
        }
        if isWrite {
            markReadBeforeWrite(start: start, end: end, block: block, in: &plan)
        }
        let bounced = plan.copies.reduce(0) { $0 + $1.length }
        plan.bytesDirect = total - bounced
        plan.bytesBounced = bounced
        plan.bytesWidened = Int(last - first) - total
    }

    /// The part of `segment` (at file offset `position`) that can go straight to the device:
    /// whole blocks whose memory is aligned too. Nil when there is none.
    private static func directRun(of segment: CallerSegment, at position: Int64, limits: PlanLimits) -> Run? {
        let block = Int64(limits.offsetAlignment)
        let memoryMask = UInt(limits.memoryAlignment - 1)
        var low = alignUp(position, block)
        let high = alignDown(position + Int64(segment.length), block)
        var memory = segment.address &+ UInt(max(low - position, 0))
        // When the memory alignment exceeds the block size, a later block may start on
        // aligned memory even though the first does not: skip to it.
        if memory & memoryMask != 0 && UInt(block) < UInt(limits.memoryAlignment) && memory & UInt(block - 1) == 0 {
            let skip = Int64((UInt(limits.memoryAlignment) - memory & memoryMask) & memoryMask)
            low += skip
            memory &+= UInt(skip)
        }
        // (A segment of length zero never has one: its `low` is not below its `high`.)
        guard low < high && memory & memoryMask == 0 else { return nil }
        return Run(start: low, end: high, kind: .direct(memory: memory))
    }

    /// The file range [first, last) as alternating direct and bounce runs, in file order.
    private static func runs(_ segments: CallerSegments, from start: Int64, covering range: Range<Int64>, limits: PlanLimits) -> [Run] {
        var direct: [Run] = []
        var position = start
        for index in 0..<segments.count {
            let segment = segments[index]
            if let run = directRun(of: segment, at: position, limits: limits) {
                if let previous = direct.last, previous.end == run.start,
                   case .direct(let previousMemory) = previous.kind, case .direct(let memory) = run.kind,
                   previousMemory &+ UInt(previous.end - previous.start) == memory {
                    direct[direct.count - 1].end = run.end  // the caller's memory continues: one run
                } else {
                    direct.append(run)
                }
            }
            position += Int64(segment.length)
        }
        var runs: [Run] = []
        var cursor = range.lowerBound
        for run in direct {
            if cursor < run.start { runs.append(Run(start: cursor, end: run.start, kind: .bounce)) }
            runs.append(run)
            cursor = run.end
        }
        if cursor < range.upperBound { runs.append(Run(start: cursor, end: range.upperBound, kind: .bounce)) }
        return runs
    }

    /// Cuts runs into device I/Os within the limits.
    private static func cut(_ runs: [Run], limits: PlanLimits, into plan: inout TransferPlan) {
        let block = limits.offsetAlignment
        let granule = limits.granule
        let maxIO = alignDown(limits.maxIOBytes, block)
        let maxPiece = alignDown(limits.maxSegmentBytes, granule)
        let bounceCapacity = alignDown(limits.bounceBufferBytes, block)
        // The I/O being filled: it starts at `ioStart` in the file, its pieces are
        // `plan.pieces[firstPiece...]`, and it is `ioLength` bytes so far.
        var open = false
        var ioStart: Int64 = 0
        var ioLength = 0
        var firstPiece = 0
        var bounceUsed = 0

        func close() {
            if open && ioLength > 0 {
                plan.ios.append(DeviceIO(fileOffset: ioStart, length: ioLength, pieces: firstPiece..<plan.pieces.count))
            }
            open = false
            bounceUsed = 0
        }

        for run in runs {
            var position = run.start
            while position < run.end {
                if !open {
                    open = true
                    ioStart = position
                    ioLength = 0
                    firstPiece = plan.pieces.count
                }
                let remaining = Int(run.end - position)
                var length = min(remaining, maxIO - ioLength)
                let pieceCount = plan.pieces.count - firstPiece
                let lastPiece = pieceCount > 0 ? plan.pieces[plan.pieces.count - 1] : nil
                switch run.kind {
                case .direct(let runMemory):
                    let memory = runMemory &+ UInt(position - run.start)
                    var extending = false
                    if let lastPiece, case .caller(let address) = lastPiece.memory,
                       address &+ UInt(lastPiece.length) == memory, lastPiece.length < maxPiece {
                        extending = true
                        length = min(length, maxPiece - lastPiece.length)
                    } else {
                        if pieceCount == limits.maxSegments { close(); continue }
                        length = min(length, maxPiece)
                    }
                    // A cut inside the run must leave the rest aligned in memory and in the file.
                    if length < remaining { length = alignDown(length, granule) }
                    if length == 0 { close(); continue }
                    if extending {
                        plan.pieces[plan.pieces.count - 1].length += length
                    } else {
                        plan.pieces.append(DevicePiece(memory: .caller(address: memory), length: length))
                    }
                case .bounce:
                    var extending = false
                    var offset = alignUp(bounceUsed, granule)
                    if let lastPiece, case .bounce(let lastOffset) = lastPiece.memory,
                       lastOffset + lastPiece.length == bounceUsed, lastPiece.length < maxPiece {
                        extending = true
                        offset = bounceUsed
                        length = min(length, maxPiece - lastPiece.length)
                    } else {
                        if pieceCount == limits.maxSegments { close(); continue }
                        length = min(length, maxPiece)
                    }
                    length = alignDown(min(length, bounceCapacity - offset), block)
                    if length <= 0 { close(); continue }
                    if extending {
                        plan.pieces[plan.pieces.count - 1].length += length
                    } else {
                        plan.pieces.append(DevicePiece(memory: .bounce(offset: offset), length: length))
                    }
                    bounceUsed = offset + length
                }
                position += Int64(length)
                ioLength += length
                if ioLength == maxIO { close() }
            }
        }
        close()
    }

    /// For every bounce piece, the caller bytes it holds: copied in before a write, out after a read.
    private static func addBounceCopies(segments: CallerSegments, from start: Int64, to plan: inout TransferPlan) {
        var segmentIndex = 0
        var segmentStart = start
        for ioIndex in plan.ios.indices {
            let io = plan.ios[ioIndex]
            var position = io.fileOffset
            for pieceIndex in io.pieces {
                let piece = plan.pieces[pieceIndex]
                let pieceEnd = position + Int64(piece.length)
                if case .bounce(let bounceOffset) = piece.memory {
                    // Advance to the first segment that ends after this piece starts.
                    while segmentIndex < segments.count && segmentStart + Int64(segments[segmentIndex].length) <= position {
                        segmentStart += Int64(segments[segmentIndex].length)
                        segmentIndex += 1
                    }
                    var index = segmentIndex
                    var indexStart = segmentStart
                    while index < segments.count && indexStart < pieceEnd {
                        let segmentEnd = indexStart + Int64(segments[index].length)
                        let low = max(position, indexStart)
                        let high = min(pieceEnd, segmentEnd)
                        if low < high {
                            plan.copies.append(BounceCopy(
                                io: ioIndex, fileOffset: low, bounceOffset: bounceOffset + Int(low - position),
                                callerAddress: segments[index].address &+ UInt(low - indexStart), length: Int(high - low)))
                        }
                        indexStart = segmentEnd
                        index += 1
                    }
                }
                position = pieceEnd
            }
        }
    }

    /// Marks the first and last blocks when the caller covers them only partly: they must be
    /// read before being written back with the caller's bytes over them.
    private static func markReadBeforeWrite(start: Int64, end: Int64, block: Int64, in plan: inout TransferPlan) {
        let head = alignDown(start, block)
        let tail = alignDown(end, block)
        if start % block != 0 { mark(head, block: block, in: &plan) }
        if end % block != 0 && (start % block == 0 || tail != head) { mark(tail, block: block, in: &plan) }
    }

    /// Marks the block at `blockStart` to be read into the bounce piece that holds it.
    private static func mark(_ blockStart: Int64, block: Int64, in plan: inout TransferPlan) {
        for ioIndex in plan.ios.indices {
            let io = plan.ios[ioIndex]
            guard blockStart >= io.fileOffset && blockStart < io.fileOffset + Int64(io.length) else { continue }
            var position = io.fileOffset
            for pieceIndex in io.pieces {
                let piece = plan.pieces[pieceIndex]
                let pieceEnd = position + Int64(piece.length)
                if blockStart >= position && blockStart < pieceEnd, case .bounce(let offset) = piece.memory {
                    plan.readBeforeWrite.append(BounceBlock(io: ioIndex, fileOffset: blockStart, bounceOffset: offset + Int(blockStart - position), length: Int(block)))
                }
                position = pieceEnd
            }
        }
    }
}

@inline(__always) func alignDown(_ value: Int64, _ alignment: Int64) -> Int64 { value - value % alignment }
@inline(__always) func alignUp(_ value: Int64, _ alignment: Int64) -> Int64 { alignDown(value + alignment - 1, alignment) }
@inline(__always) func alignDown(_ value: Int, _ alignment: Int) -> Int { value - value % alignment }
@inline(__always) func alignUp(_ value: Int, _ alignment: Int) -> Int { alignDown(value + alignment - 1, alignment) }
