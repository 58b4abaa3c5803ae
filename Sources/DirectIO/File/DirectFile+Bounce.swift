import Glibc
import SystemPackage

/// Requests that break the file's alignment, executed from a `TransferPlan`: the aligned
/// parts go straight between the caller's memory and the device, the rest through bounce
/// buffers (copied in before a write is submitted, copied out after a read completes), and
/// blocks the caller covers only partly are read, merged and written back under a block lock.
extension DirectFile {
    /// The widest head-to-tail range a read-modify-write reads in one I/O instead of two: the
    /// transfer costs less than a second request up to about this size on virtio and NVMe.
    static let wholeRangeReadBytes = 64 << 10

    /// The identity of the file for block locks.
    struct Identity: Sendable {
        var device: UInt64
        var inode: UInt64
    }

    func transferBounced(isRead: Bool, _ segments: [CallerSegment], at offset: Int64, name: String) throws(DirectIOError) -> Int {
        let total = segments.reduce(0) { $0 + $1.length }
        if let problem = AlignmentCheck.argumentProblem(offset: offset, length: total) {
            throw DirectIOError(.invalidArgument, operation: name, path: path, offset: offset, length: total, detail: problem)
        }
        let pool: BufferPool
        if let sharedBouncePool { pool = sharedBouncePool } else { pool = try engine.bouncePool() }
        let plan = try TransferPlanner.plan(
            segments: segments, fileOffset: offset, isWrite: !isRead,
            limits: PlanLimits(limits, isRead: isRead, bounceBufferBytes: pool.bufferBytes))
        let partial = plan.ios.flatMap(\.readBeforeWrite)
        let keys = partial.map { BlockLocks.Key(device: identity.device, inode: identity.inode, block: $0.fileOffset) }
        BlockLocks.shared.lock(keys)
        defer { BlockLocks.shared.unlock(keys) }
        // A write whose last block lies past the end of the file writes that whole block, and
        // the file is cut back to the caller's end afterwards. Only then is the size needed:
        // that block's read comes back short, and `readBlocks` takes the size at that moment.
        let end = offset + Int64(total)
        var sizeBefore: Int64? = nil

        // One bounce buffer serves every I/O of the transfer in turn. It is taken after the
        // block locks (a caller waiting for locks holds no buffer, so waiters cannot deadlock)
        // and before any I/O (so a caller that will not wait fails before writing anything).
        if plan.ios.contains(where: { $0.bounceBytes > 0 }) {
            var waited = false
            guard let buffer = waitsForBounceBuffers ? pool.takeWaiting(waited: &waited) : pool.take() else {
                throw DirectIOError(.wouldBlock, operation: name, path: path, offset: offset, length: total,
                                    detail: "all \(pool.count) bounce buffers are in use and this file was opened not to wait for one; nothing was transferred")
            }
            // The buffer goes back only after the last I/O's completion: `perform` returns
            // only then, and `buffer` lives to the end of this block.
            let result = try runIOs(plan, isRead: isRead, bounceBase: buffer.baseAddress, name: name, offset: offset, total: total, sizeBefore: &sizeBefore)
            _ = consume buffer
            if waited { record(TransferStatistics(bounceWaits: 1)) }
            if let short = result { return short }
        } else if let short = try runIOs(plan, isRead: isRead, bounceBase: nil, name: name, offset: offset, total: total, sizeBefore: &sizeBefore) {
            return short
        }
        if let sizeBefore {
            let size = try size()
            let keep = max(sizeBefore, end)
            if size > keep {
                do { try Sys.ftruncate(descriptor, keep) } catch {
                    throw .system(error, operation: name, call: "ftruncate", path: path, offset: keep, detail: "cutting back the zero-filled tail of the last block")
                }
            }
        }
        recordBounce(plan, upTo: total, total: total, readModifyWrites: partial.count)
        return total
    }

    /// Runs the plan's I/Os in order; returns the caller's byte count if the file ended
    /// early (a short read), nil when every I/O completed in full.
    private func runIOs(_ plan: TransferPlan, isRead: Bool, bounceBase: UnsafeMutableRawPointer?, name: String, offset: Int64, total: Int, sizeBefore: inout Int64?) throws(DirectIOError) -> Int? {
        let end = offset + Int64(total)
        for (index, io) in plan.ios.enumerated() {
            let moved: Int
            if io.bounceBytes > 0, let bounceBase {
                moved = try bounced(io, index: index, plan: plan, isRead: isRead, bounceBase: bounceBase, name: name, offset: offset, total: total, sizeBefore: &sizeBefore)
            } else {
                moved = try deviceIO(io, isRead: isRead, bounceBase: nil, name: name, offset: offset, total: total)
            }
            if moved < io.length {
                let validEnd = io.fileOffset + Int64(moved)
                guard isRead else {
                    throw DirectIOError(.ioError, operation: name, path: path, offset: validEnd, length: total,
                                        detail: "the device accepted \(moved) of \(io.length) bytes and then no more")
                }
                // End of file: the caller gets what exists.
                let got = Int(max(0, min(end, validEnd) - offset))
                recordBounce(plan, upTo: got, total: total)
                return got
            }
        }
        return nil
    }

    /// One device I/O with a bounce buffer: read-modify-write blocks and copy-in before a
    /// write, copy-out (of what was read, which may end at EOF) after a read.
    private func bounced(_ io: DeviceIO, index: Int, plan: TransferPlan, isRead: Bool, bounceBase: UnsafeMutableRawPointer, name: String, offset: Int64, total: Int, sizeBefore: inout Int64?) throws(DirectIOError) -> Int {
        let copies = plan.copies.filter { $0.io == index }
        if !isRead {
            try readBlocks(io.readBeforeWrite, bounceBase: bounceBase, name: name, sizeBefore: &sizeBefore)
            for copy in copies {
                // Caller addresses come from the caller's own buffers, which are never null.
                (bounceBase + copy.bounceOffset).copyMemory(from: UnsafeRawPointer(bitPattern: copy.callerAddress).unsafelyUnwrapped, byteCount: copy.length)
            }
        }
        let moved = try deviceIO(io, isRead: isRead, bounceBase: bounceBase, name: name, offset: offset, total: total)
        if isRead {
            let validEnd = io.fileOffset + Int64(moved)
            for copy in copies where copy.fileOffset < validEnd {
                let count = Int(min(Int64(copy.length), validEnd - copy.fileOffset))
                UnsafeMutableRawPointer(bitPattern: copy.callerAddress).unsafelyUnwrapped.copyMemory(from: bounceBase + copy.bounceOffset, byteCount: count)
            }
        }
        return moved
    }

    private func recordBounce(_ plan: TransferPlan, upTo got: Int, total: Int, readModifyWrites: Int = 0) {
        guard total > 0 else { return }
        // At end of file only part of the plan ran: count that share of its bounced bytes.
        let bounced = got == total ? plan.bytesBounced : plan.bytesBounced * got / total
        record(TransferStatistics(bytesDirect: got - bounced, bytesBounced: bounced, readModifyWriteBlocks: readModifyWrites))
    }

    /// One planned device I/O; returns the bytes it moved. A single piece in registered memory
    /// (a bounce buffer, or caller memory inside a pool buffer) uses READ_FIXED/WRITE_FIXED;
    /// otherwise the kernel pins the pages for this I/O (BENCHMARKS.md, "How the kernel should
    /// reach caller memory": neither copying nor a per-I/O mapping is cheaper at any size).
    private func deviceIO(_ io: DeviceIO, isRead: Bool, bounceBase: UnsafeMutableRawPointer?, name: String, offset: Int64, total: Int) throws(DirectIOError) -> Int {
        let addresses = io.pieces.map { piece -> UnsafeMutableRawPointer? in
            switch piece.memory {
            case .caller(let address): UnsafeMutableRawPointer(bitPattern: address)
            case .bounce(let bounceOffset): bounceBase.map { $0 + bounceOffset }
            }
        }
        let outcome: IOOutcome
        if io.pieces.count == 1, let address = addresses[0] {
            let fixed = engine.fixedIndex(containing: address, length: io.length)
            let operation = isRead
                ? IOOperation.read(fd: descriptor, fileSlot: fileSlot, into: address, count: io.length, at: io.fileOffset, fixedSlot: fixed)
                : IOOperation.write(fd: descriptor, fileSlot: fileSlot, from: address, count: io.length, at: io.fileOffset, fixedSlot: fixed)
            outcome = try engine.perform(operation, blockBytes: isRead ? alignment.readAlignment : alignment.writeAlignment)
        } else {
            let copy = UnsafeMutablePointer<iovec>.allocate(capacity: io.pieces.count)
            defer { copy.deallocate() }
            for (index, piece) in io.pieces.enumerated() {
                (copy + index).initialize(to: iovec(iov_base: addresses[index], iov_len: piece.length))
            }
            let operation = IOOperation.vectored(isRead ? .readv : .writev, fd: descriptor, fileSlot: fileSlot, vectors: copy, count: io.pieces.count, at: io.fileOffset)
            outcome = try engine.perform(operation, blockBytes: isRead ? alignment.readAlignment : alignment.writeAlignment)
        }
        if let errno = outcome.errno {
            throw .system(errno, operation: name, call: engine.kind == .ioUring ? (isRead ? "READ(V)" : "WRITE(V)") : (isRead ? "pread(v)" : "pwrite(v)"),
                          path: path, offset: io.fileOffset + Int64(outcome.bytes), length: total,
                          detail: "device I/O of \(io.length) bytes at \(io.fileOffset) for a request of \(total) bytes at \(offset)")
        }
        return outcome.bytes
    }

    /// Reads the blocks a write covers only partly into bounce memory, to merge with it. The
    /// usual two (head and tail) cost one device round trip, not two: when they lie in the
    /// bounce buffer as in the file and at most `wholeRangeReadBytes` apart, one read covers
    /// both (the bytes between are overwritten by the caller's data before the write: plain
    /// code does the same), else both reads are submitted together. Past the end of the file
    /// a block reads short, and its tail becomes zeros; the file's size is then taken into
    /// `sizeBefore` (once, before this I/O's write changes it).
    private func readBlocks(_ blocks: [BounceBlock], bounceBase: UnsafeMutableRawPointer, name: String, sizeBefore: inout Int64?) throws(DirectIOError) {
        if blocks.count == 2 {
            let head = blocks[0]
            let tail = blocks[1]
            let span = Int(tail.fileOffset - head.fileOffset) + tail.length
            if tail.bounceOffset - head.bounceOffset == Int(tail.fileOffset - head.fileOffset) && span <= Self.wholeRangeReadBytes {
                return try readBlocks([BounceBlock(fileOffset: head.fileOffset, bounceOffset: head.bounceOffset, length: span)], bounceBase: bounceBase, name: name, sizeBefore: &sizeBefore)
            }
        }
        func operation(_ block: BounceBlock) -> IOOperation {
            let address = bounceBase + block.bounceOffset
            return .read(fd: descriptor, fileSlot: fileSlot, into: address, count: block.length, at: block.fileOffset,
                         fixedSlot: engine.fixedIndex(containing: address, length: block.length))
        }
        func merge(_ outcome: IOOutcome, _ block: BounceBlock) throws(DirectIOError) {
            if let errno = outcome.errno {
                throw .system(errno, operation: name, call: engine.kind == .ioUring ? "READ" : "pread", path: path, offset: block.fileOffset, length: block.length,
                              detail: "reading the block to merge with an unaligned write")
            }
            if outcome.bytes < block.length {
                memset(bounceBase + block.bounceOffset + outcome.bytes, 0, block.length - outcome.bytes)
                if sizeBefore == nil { sizeBefore = try size() }
            }
        }
        let blockBytes = alignment.readAlignment
        if blocks.count == 2 {
            let (head, tail) = try engine.perform(operation(blocks[0]), operation(blocks[1]), blockBytes: blockBytes)
            try merge(head, blocks[0])
            try merge(tail, blocks[1])
            return
        }
        for block in blocks {
            try merge(try engine.perform(operation(block), blockBytes: blockBytes), block)
        }
    }
}
