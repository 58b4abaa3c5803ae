import SystemPackage

/// Requests that break the file's alignment, carried out by the shared `Realignment` layer:
/// the aligned parts go straight between the caller's memory and the device, the rest through
/// a bounce buffer, and blocks the caller covers only partly are read, merged and written back
/// under a block lock. This is its synchronous driver.
extension DirectFile {
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
        let pool = sharedBouncePool ?? Realignment.bouncePool(offset: offset, length: total, block: isRead ? alignment.readAlignment : alignment.writeAlignment,
                                                              small: engine.smallBouncePool, large: engine.bouncePool)
        let plan = try TransferPlanner.plan(
            segments: segments, fileOffset: offset, isWrite: !isRead,
            limits: PlanLimits(limits, isRead: isRead, bounceBufferBytes: pool.bufferBytes))
        let keys = Realignment.lockKeys(plan, identity: identity)
        BlockLocks.shared.lock(keys)
        defer { BlockLocks.shared.unlock(keys) }

        // One bounce buffer serves every I/O of the transfer in turn. It is taken after the
        // block locks (a caller waiting for locks holds no buffer, so waiters cannot deadlock)
        // and before any I/O (so a caller that will not wait fails before writing anything).
        guard Realignment.needsBounce(plan) else {
            return try run(Realignment(plan: plan, isRead: isRead, bounce: nil, offset: offset, total: total, rules: rules, descriptor: descriptor, name: name, usesRing: engine.kind == .ioUring), bounceSlot: nil)
        }
        var waited = false
        guard let buffer = waitsForBounceBuffers ? pool.takeWaiting(waited: &waited) : pool.take() else {
            throw DirectIOError(.wouldBlock, operation: name, path: path, offset: offset, length: total,
                                detail: "all \(pool.count) bounce buffers are in use and this file was opened not to wait for one; nothing was transferred")
        }
        if waited { record(TransferStatistics(bounceWaits: 1)) }
        // The buffer goes back only after the last I/O's completion: `run` returns only then
        // (also when it throws), and `buffer` lives to the end of this scope.
        let moved = try run(Realignment(plan: plan, isRead: isRead, bounce: buffer.baseAddress, offset: offset, total: total, rules: rules, descriptor: descriptor, name: name, usesRing: engine.kind == .ioUring),
                            bounceSlot: engine.fixedIndex(of: buffer.poolSlot))
        _ = consume buffer
        return moved
    }

    /// A batched request the realignment layer carries out in steps under one tag (an
    /// unaligned write: read the edge blocks, merge, write; or a read whose block range does
    /// not fit its buffer). Its block locks and bounce buffer are taken now and held until its
    /// last step completes. Waiting for either never blocks on this engine's own realigned
    /// requests: only this thread reaps them, so it makes them progress instead.
    func submitRealigned(isRead: Bool, _ buffer: consuming PoolBuffer, bufferOffset: Int, count: Int, at offset: Int64, tag: UInt64) throws(DirectIOError) {
        let name = isRead ? "read" : "write"
        let pool = sharedBouncePool ?? Realignment.bouncePool(offset: offset, length: count, block: isRead ? alignment.readAlignment : alignment.writeAlignment,
                                                              small: engine.smallBouncePool, large: engine.bouncePool)
        let plan = try TransferPlanner.plan(
            segments: [CallerSegment(address: UInt(bitPattern: buffer.baseAddress + bufferOffset), length: count)], fileOffset: offset, isWrite: !isRead,
            limits: PlanLimits(limits, isRead: isRead, bounceBufferBytes: pool.bufferBytes))
        let keys = Realignment.lockKeys(plan, identity: identity)
        while !BlockLocks.shared.tryLock(keys) {
            guard engine.holdsRealignedRequests else {
                BlockLocks.shared.lock(keys)  // held by other threads' requests, which they reap
                break
            }
            do { try engine.progress() } catch {
                throw error
            }
        }
        var bounce: PoolBuffer? = nil
        if Realignment.needsBounce(plan) {
            bounce = pool.take()
            while bounce == nil {
                if engine.holdsRealignedRequests {
                    do { try engine.progress() } catch {
                        BlockLocks.shared.unlock(keys)
                        throw error
                    }
                    bounce = pool.take()
                } else if waitsForBounceBuffers {
                    var waited = false
                    bounce = pool.takeWaiting(waited: &waited)
                    if waited { record(TransferStatistics(bounceWaits: 1)) }
                } else {
                    BlockLocks.shared.unlock(keys)
                    throw DirectIOError(.wouldBlock, operation: name, path: path, offset: offset, length: count,
                                        detail: "all \(pool.count) bounce buffers are in use and this file was opened not to wait for one; nothing was submitted")
                }
            }
        }
        let base = bounce?.baseAddress
        let bounceSlot = engine.fixedIndex(of: bounce?.poolSlot)
        let request = RealignedRequest(
            realignment: Realignment(plan: plan, isRead: isRead, bounce: base, offset: offset, total: count, rules: rules, descriptor: descriptor, name: name, usesRing: engine.kind == .ioUring),
            bounce: bounce, bounceSlot: bounceSlot, keys: keys, fd: descriptor, fileSlot: fileSlot,
            readBlock: alignment.readAlignment, writeBlock: alignment.writeAlignment, offset: offset, counters: isDirect ? counters : nil)
        try engine.submit(request, buffer: buffer, tag: tag)
    }

    /// Submits the realignment's requests until it is done: a pair goes in one
    /// io_uring_enter, so the device overlaps them. Memory in the bounce buffer uses its
    /// fixed-buffer slot; caller memory that lies in a registered pool buffer uses that one's.
    private func run(_ realignment: consuming Realignment, bounceSlot: UInt16?) throws(DirectIOError) -> Int {
        while true {
            switch try realignment.next() {
            case .done(let moved):
                record(realignment.statistics(moved: moved))
                return moved
            case .submit(let first, nil):
                try realignment.complete(try engine.perform(operation(first, bounceSlot: bounceSlot), blockBytes: blockBytes(first)))
            case .submit(let first, let second?):
                let (one, two) = try engine.perform(operation(first, bounceSlot: bounceSlot), operation(second, bounceSlot: bounceSlot), blockBytes: blockBytes(first))
                try realignment.complete(one, two)
            }
        }
    }

    private func blockBytes(_ request: DeviceRequest) -> Int {
        request.isRead ? alignment.readAlignment : alignment.writeAlignment
    }

    private func operation(_ request: DeviceRequest, bounceSlot: UInt16?) -> IOOperation {
        request.operation(fd: descriptor, fileSlot: fileSlot, bounceSlot: bounceSlot, engine: engine)
    }
}
