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
        if let problem = limits.problem {
            throw DirectIOError(.invalidArgument, operation: "plan transfer", offset: fileOffset, detail: problem)
        }
        let total = segments.reduce(0) { $0 + $1.length }
        guard fileOffset >= 0, total > 0 else {
            if fileOffset < 0 { throw DirectIOError(.invalidArgument, operation: "plan transfer", offset: fileOffset, detail: "offset \(fileOffset) is negative") }
            return TransferPlan(ios: [], copies: [], bytesDirect: 0, bytesBounced: 0, bytesWidened: 0)
        }
        let block = Int64(limits.offsetAlignment)
        let start = fileOffset
        let end = fileOffset + Int64(total)
        let first = alignDown(start, block)
        let last = alignUp(end, block)

        let runs = self.runs(segments, from: start, covering: first..<last, limits: limits)
        var ios = cut(runs, limits: limits)
        let copies = bounceCopies(ios, segments: segments, from: start)
        if isWrite {
            markReadBeforeWrite(&ios, start: start, end: end, block: block)
        }
        let bounced = copies.reduce(0) { $0 + $1.length }
        return TransferPlan(
            ios: ios, copies: copies, bytesDirect: total - bounced, bytesBounced: bounced,
            bytesWidened: Int(last - first) - total)
    }

    /// The file range [first, last) as alternating direct and bounce runs, in file order.
    private static func runs(_ segments: CallerSegments, from start: Int64, covering range: Range<Int64>, limits: PlanLimits) -> InlineList<3, Run> {
        let block = Int64(limits.offsetAlignment)
        let memoryMask = UInt(limits.memoryAlignment - 1)
        var direct = InlineList<3, Run>()
        var position = start
        for segment in segments {
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
            if low < high && memory & memoryMask == 0 {
                // (A segment of length zero never gets here: its `low` is not below its `high`.)
                if let previous = direct.last, previous.end == low,
                   case .direct(let previousMemory) = previous.kind, previousMemory &+ UInt(previous.end - previous.start) == memory {
                    direct[direct.count - 1].end = high  // the caller's memory continues: one run
                } else {
                    direct.append(Run(start: low, end: high, kind: .direct(memory: memory)))
                }
            }
            position += Int64(segment.length)
        }
        var runs = InlineList<3, Run>()
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
    private static func cut(_ runs: InlineList<3, Run>, limits: PlanLimits) -> InlineList<1, DeviceIO> {
        let block = limits.offsetAlignment
        let granule = limits.granule
        let maxIO = alignDown(limits.maxIOBytes, block)
        let maxPiece = alignDown(limits.maxSegmentBytes, granule)
        let bounceCapacity = alignDown(limits.bounceBufferBytes, block)
        var ios = InlineList<1, DeviceIO>()
        var current: DeviceIO? = nil
        var bounceUsed = 0

        func close() {
            if let io = current { ios.append(io) }
            current = nil
            bounceUsed = 0
        }

        for run in runs {
            var position = run.start
            while position < run.end {
                if current == nil { current = DeviceIO(fileOffset: position, pieces: [], readBeforeWrite: []) }
                guard var io = current else { break }
                let remaining = Int(run.end - position)
                var length = min(remaining, maxIO - io.length)
                let lastPiece = io.pieces.last
                switch run.kind {
                case .direct(let runMemory):
                    let memory = runMemory &+ UInt(position - run.start)
                    var extending = false
                    if let lastPiece, case .caller(let address) = lastPiece.memory,
                       address &+ UInt(lastPiece.length) == memory, lastPiece.length < maxPiece {
                        extending = true
                        length = min(length, maxPiece - lastPiece.length)
                    } else {
                        if io.pieces.count == limits.maxSegments { close(); continue }
                        length = min(length, maxPiece)
                    }
                    // A cut inside the run must leave the rest aligned in memory and in the file.
                    if length < remaining { length = alignDown(length, granule) }
                    if length == 0 { close(); continue }
                    if extending {
                        io.pieces[io.pieces.count - 1].length += length
                    } else {
                        io.pieces.append(DevicePiece(memory: .caller(address: memory), length: length))
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
                        if io.pieces.count == limits.maxSegments { close(); continue }
                        length = min(length, maxPiece)
                    }
                    length = alignDown(min(length, bounceCapacity - offset), block)
                    if length <= 0 { close(); continue }
                    if extending {
                        io.pieces[io.pieces.count - 1].length += length
                    } else {
                        io.pieces.append(DevicePiece(memory: .bounce(offset: offset), length: length))
                    }
                    bounceUsed = offset + length
                }
                position += Int64(length)
                current = io
                if io.length == maxIO { close() }
            }
        }
        close()
        return ios
    }

    /// For every bounce piece, the caller bytes it holds: copied in before a write, out after a read.
    private static func bounceCopies(_ ios: InlineList<1, DeviceIO>, segments: CallerSegments, from start: Int64) -> InlineList<2, BounceCopy> {
        var copies = InlineList<2, BounceCopy>()
        var segmentIndex = 0
        var segmentStart = start
        for (ioIndex, io) in ios.enumerated() {
            var position = io.fileOffset
            for piece in io.pieces {
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
                            copies.append(BounceCopy(
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
        return copies
    }

    /// Marks the first and last blocks when the caller covers them only partly: they must be
    /// read before being written back with the caller's bytes over them.
    private static func markReadBeforeWrite(_ ios: inout InlineList<1, DeviceIO>, start: Int64, end: Int64, block: Int64) {
        let head = alignDown(start, block)
        let tail = alignDown(end, block)
        if start % block != 0 { mark(head, in: &ios, block: block) }
        if end % block != 0 && (start % block == 0 || tail != head) { mark(tail, in: &ios, block: block) }
    }

    /// Marks the block at `blockStart` to be read into the bounce piece that holds it.
    private static func mark(_ blockStart: Int64, in ios: inout InlineList<1, DeviceIO>, block: Int64) {
        for index in ios.indices {
            var position = ios[index].fileOffset
            for piece in ios[index].pieces {
                let pieceEnd = position + Int64(piece.length)
                if blockStart >= position && blockStart < pieceEnd, case .bounce(let offset) = piece.memory {
                    ios[index].readBeforeWrite.append(BounceBlock(fileOffset: blockStart, bounceOffset: offset + Int(blockStart - position), length: Int(block)))
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
