import Glibc  // iovec
import SystemPackage

/// A device request of a realigned transfer, before an engine or a ring turns it into a
/// submission: the driver adds the file's descriptor, its fixed-file slot and, for memory in
/// the bounce buffer, that buffer's fixed-buffer slot.
struct DeviceRequest {
    var isRead: Bool
    var fileOffset: Int64
    var length: Int
    /// The memory, or the iovec array when `vectorCount` > 0.
    var address: UnsafeMutableRawPointer
    var vectorCount: Int
    /// Whether the memory lies in the transfer's bounce buffer (one piece).
    var inBounceBuffer: Bool
}

/// One realigned transfer carried out step by step: the single realignment layer under
/// `DirectFile`, `AsyncFile` and every other API. It says which device requests to submit next
/// and takes their outcomes; the driver only submits them, synchronously or from a task. So
/// the copy-in, copy-out, read-modify-write merge, end-of-file and error rules exist once.
///
/// For each device I/O of the plan, in order: a write that covers blocks only partly first
/// reads them (`mergeReads`: the head and tail together, as one read when they lie at most
/// `wholeRangeReadBytes` apart, else two submitted together), then copies the caller's bytes
/// in and writes; a read reads, then copies the bounced bytes out. The driver holds the block
/// locks and the bounce buffer around the whole transfer, and the memory `bounce` points to
/// stays valid until `next()` has returned `.done` or a call has thrown.
struct Realignment: ~Copyable {
    enum Step {
        /// Submit these (the second, when present, together with the first), then `complete`.
        case submit(DeviceRequest, DeviceRequest?)
        /// The transfer is over: the caller's bytes moved (fewer only for a read at end of file).
        case done(Int)
    }

    private enum Stage { case start, mergeReads, merged, transfer }

    /// The widest head-to-tail range a read-modify-write reads in one I/O instead of two: the
    /// transfer costs less than a second request up to about this size on virtio and NVMe.
    static let wholeRangeReadBytes = 64 << 10

    private(set) var plan: TransferPlan
    let isRead: Bool
    private let bounce: UnsafeMutableRawPointer?
    private let offset: Int64
    private let total: Int
    /// The file's path (for errors) and whether it is a block device (how to take its size):
    /// all the transfer needs of the file's rules, which are dear to copy.
    private let path: String
    private let isBlockDevice: Bool
    private let descriptor: Int32
    private let name: String
    /// What carries the requests, to name the call in errors.
    private let carrier: RequestCarrier
    private var index = 0
    private var stage = Stage.start
    /// The edge blocks being read for the current I/O (one merged range, or head and tail).
    private var merging: (BounceBlock, BounceBlock?)?
    /// The file's size before a write whose last block lay past the end (read short).
    private var sizeBefore: Int64?
    private var vectors: UnsafeMutablePointer<iovec>?
    private var vectorCapacity = 0
    /// The caller's bytes moved when a read ended early at end of file.
    private var endedEarly: Int?

    init(plan: TransferPlan, isRead: Bool, bounce: UnsafeMutableRawPointer?, offset: Int64, total: Int, rules: FileRules, descriptor: Int32, name: String, carrier: RequestCarrier) {
        self.plan = plan
        self.isRead = isRead
        self.bounce = bounce
        self.offset = offset
        self.total = total
        self.path = rules.path
        self.isBlockDevice = rules.limits.isBlockDevice
        self.descriptor = descriptor
        self.name = name
        self.carrier = carrier
    }

    deinit { vectors?.deallocate() }

    /// Takes the plan back once the transfer is over, for `SparePlans` to keep.
    mutating func takePlan() -> TransferPlan {
        var taken = TransferPlan()
        swap(&taken, &plan)
        return taken
    }

    /// The size of each small bounce buffer: the covering blocks of a 4,000-byte request at
    /// any offset fit, on 512-byte and 4 KiB sectors.
    static let smallBounceBytes = 8 << 10

    /// The bounce pool for a request: the small one when the request's covering blocks fit
    /// one of its buffers (one per request the engine or rings can hold), else the large one.
    static func bouncePool(offset: Int64, length: Int, block: Int, small: BufferPool?, large: BufferPool) -> BufferPool {
        let block = Int64(block)
        let span = alignUp(offset + Int64(length), block) - alignDown(offset, block)
        if let small, span <= Int64(small.bufferBytes) { return small }
        return large
    }

    /// Whether the plan needs a bounce buffer.
    static func needsBounce(_ plan: TransferPlan) -> Bool {
        plan.needsBounce
    }

    /// The blocks a write must lock: those it reads, merges and writes back.
    static func lockKeys(_ plan: TransferPlan, identity: DirectFile.Identity) -> BlockLocks.Keys {
        var keys = BlockLocks.Keys()
        for block in plan.readBeforeWrite { keys.append(BlockLocks.Key(device: identity.device, inode: identity.inode, block: block.fileOffset)) }
        return keys
    }

    /// What the transfer moved, for the statistics: at end of file only part of the plan ran,
    /// so only that share of its bounced bytes counts.
    func statistics(moved: Int) -> TransferStatistics {
        guard total > 0 else { return TransferStatistics() }
        let bounced = moved == total ? plan.bytesBounced : plan.bytesBounced * moved / total
        let merges = isRead ? 0 : plan.readBeforeWrite.count
        return TransferStatistics(bytesDirect: moved - bounced, bytesBounced: bounced, readModifyWriteBlocks: moved == total ? merges : 0)
    }

    mutating func next() throws(DirectIOError) -> Step {
        if let endedEarly { return .done(endedEarly) }
        guard index < plan.ios.count else {
            try cutBackTail()
            return .done(total)
        }
        let io = plan.ios[index]
        if stage == .start && !isRead, let bounce, let (head, second) = edgeBlocks() {
            stage = .mergeReads
            if let tail = second {
                let span = Int(tail.fileOffset - head.fileOffset) + tail.length
                if tail.bounceOffset - head.bounceOffset == Int(tail.fileOffset - head.fileOffset) && span <= Self.wholeRangeReadBytes {
                    // The bytes between are overwritten by the caller's before the write.
                    merging = (BounceBlock(io: index, fileOffset: head.fileOffset, bounceOffset: head.bounceOffset, length: span), nil)
                } else {
                    merging = (head, tail)
                }
            } else {
                merging = (head, nil)
            }
            guard let (first, second) = merging else { return .done(total) }
            return .submit(blockRead(first, bounce), second.map { blockRead($0, bounce) })
        }
        if !isRead, let bounce {
            for copy in plan.copies where copy.io == index {
                // Caller addresses come from the caller's own buffers, which are never null.
                (bounce + copy.bounceOffset).copyMemory(from: UnsafeRawPointer(bitPattern: copy.callerAddress).unsafelyUnwrapped, byteCount: copy.length)
            }
        }
        stage = .transfer
        return .submit(transferRequest(io), nil)
    }

    /// Whether the requests `next()` returned last are the transfer's last: the final write,
    /// or the final read (a read that ends at end of file may end sooner).
    var submittedLast: Bool { stage == .transfer && index == plan.ios.count - 1 }

    /// Takes the outcomes of the requests `next()` returned.
    mutating func complete(_ first: IOOutcome, _ second: IOOutcome? = nil) throws(DirectIOError) {
        switch stage {
        case .mergeReads:
            guard let (head, tail) = merging, let bounce else { return }
            try merge(first, head, bounce)
            if let tail, let second { try merge(second, tail, bounce) }
            stage = .merged
            merging = nil
        case .transfer:
            let io = plan.ios[index]
            if let errno = first.errno {
                let vectored = io.pieces.count > 1
                throw .system(errno, operation: name, call: carrier.name(of: isRead ? (vectored ? .readv : .read) : (vectored ? .writev : .write)),
                              path: path, offset: io.fileOffset + Int64(first.bytes), length: total,
                              detail: "device I/O of \(io.length) bytes at \(io.fileOffset) for a request of \(total) bytes at \(offset)")
            }
            let moved = first.bytes
            if isRead, let bounce {
                let validEnd = io.fileOffset + Int64(moved)
                for copy in plan.copies where copy.io == index && copy.fileOffset < validEnd {
                    let count = Int(min(Int64(copy.length), validEnd - copy.fileOffset))
                    UnsafeMutableRawPointer(bitPattern: copy.callerAddress).unsafelyUnwrapped.copyMemory(from: bounce + copy.bounceOffset, byteCount: count)
                }
            }
            if moved < io.length {
                guard isRead else {
                    throw DirectIOError(.ioError, operation: name, path: path, offset: io.fileOffset + Int64(moved), length: total,
                                        detail: "the device accepted \(moved) of \(io.length) bytes and then no more")
                }
                // End of file: the caller gets what exists.
                let validEnd = io.fileOffset + Int64(moved)
                endedEarly = Int(max(0, min(offset + Int64(total), validEnd) - offset))
            }
            index += 1
            stage = .start
        case .start, .merged:
            break
        }
    }

    /// The blocks the current I/O must read before writing, in file order (the planner marks
    /// at most two per transfer: its head and its tail).
    private func edgeBlocks() -> (BounceBlock, BounceBlock?)? {
        var first: BounceBlock?
        for block in plan.readBeforeWrite where block.io == index {
            guard let head = first else {
                first = block
                continue
            }
            return (head, block)
        }
        return first.map { ($0, nil) }
    }

    // MARK: Requests

    private func blockRead(_ block: BounceBlock, _ bounce: UnsafeMutableRawPointer) -> DeviceRequest {
        DeviceRequest(isRead: true, fileOffset: block.fileOffset, length: block.length, address: bounce + block.bounceOffset, vectorCount: 0, inBounceBuffer: true)
    }

    private mutating func transferRequest(_ io: DeviceIO) -> DeviceRequest {
        func address(_ piece: DevicePiece) -> UnsafeMutableRawPointer? {
            switch piece.memory {
            case .caller(let address): UnsafeMutableRawPointer(bitPattern: address)
            case .bounce(let bounceOffset): bounce.map { $0 + bounceOffset }
            }
        }
        if io.pieces.count == 1, let single = address(plan.pieces[io.pieces.lowerBound]) {
            if case .bounce = plan.pieces[io.pieces.lowerBound].memory {
                return DeviceRequest(isRead: isRead, fileOffset: io.fileOffset, length: io.length, address: single, vectorCount: 0, inBounceBuffer: true)
            }
            return DeviceRequest(isRead: isRead, fileOffset: io.fileOffset, length: io.length, address: single, vectorCount: 0, inBounceBuffer: false)
        }
        // The engine rewrites the iovecs to resubmit a short transfer's remainder: they are
        // this transfer's own, alive until its last completion.
        if vectorCapacity < io.pieces.count {
            vectors?.deallocate()
            vectors = .allocate(capacity: io.pieces.count)
            vectorCapacity = io.pieces.count
        }
        let array = vectors.unsafelyUnwrapped
        for (position, pieceIndex) in io.pieces.enumerated() {
            let piece = plan.pieces[pieceIndex]
            (array + position).initialize(to: iovec(iov_base: address(piece), iov_len: piece.length))
        }
        return DeviceRequest(isRead: isRead, fileOffset: io.fileOffset, length: io.length, address: UnsafeMutableRawPointer(array), vectorCount: io.pieces.count, inBounceBuffer: false)
    }

    // MARK: Read-modify-write

    /// A partly covered block read back: past the end of the file it reads short and its tail
    /// becomes zeros; the file's size is then taken (once, before this I/O's write changes it).
    private mutating func merge(_ outcome: IOOutcome, _ block: BounceBlock, _ bounce: UnsafeMutableRawPointer) throws(DirectIOError) {
        if let errno = outcome.errno {
            throw .system(errno, operation: name, call: carrier.name(of: .read), path: path, offset: block.fileOffset, length: block.length,
                          detail: "reading the block to merge with an unaligned write")
        }
        if outcome.bytes < block.length {
            (bounce + block.bounceOffset + outcome.bytes).initializeMemory(as: UInt8.self, repeating: 0, count: block.length - outcome.bytes)
            if sizeBefore == nil { sizeBefore = try FileRules.size(of: descriptor, isBlockDevice: isBlockDevice, path: path, operation: name) }
        }
    }

    /// A write whose last block lay past the end of the file wrote that whole block: the file
    /// is cut back to the caller's end (or its old size, if larger).
    private func cutBackTail() throws(DirectIOError) {
        guard let sizeBefore else { return }
        let keep = max(sizeBefore, offset + Int64(total))
        if try FileRules.size(of: descriptor, isBlockDevice: isBlockDevice, path: path, operation: name) > keep {
            do { try Sys.ftruncate(descriptor, keep) } catch {
                throw .system(error, operation: name, call: "ftruncate", path: path, offset: keep, detail: "cutting back the zero-filled tail of the last block")
            }
        }
    }
}
