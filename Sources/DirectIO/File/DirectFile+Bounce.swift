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

    func transferBounced(isRead: Bool, _ segments: CallerSegments, at offset: Int64, name: String) throws(DirectIOError) -> Int {
        let total = segments.total
        if let problem = AlignmentCheck.argumentProblem(offset: offset, length: total) {
            throw DirectIOError(.invalidArgument, operation: name, path: path, offset: offset, length: total, detail: problem)
        }
        let (plan, pool) = try plan(isRead: isRead, segments, at: offset, length: total)
        let keys = Realignment.lockKeys(plan, identity: identity)
        // The buffer goes back only after the last I/O's completion (`run` returns, or throws,
        // only then), and the locks after that.
        var bounce = try acquire(keys, bounceFrom: Realignment.needsBounce(plan) ? pool : nil, name: name, offset: offset, length: total)
        defer { BlockLocks.shared.unlock(keys) }
        let base = bounce?.baseAddress
        let moved = try run(Realignment(plan: plan, isRead: isRead, bounce: base, offset: offset, total: total, rules: rules, descriptor: descriptor, name: name, carrier: RequestCarrier(engine.kind, waited: true)),
                            bounceSlot: engine.fixedIndex(of: bounce?.poolSlot))
        _ = bounce.take()
        return moved
    }

    /// A batched request the realignment layer carries out in steps under one tag (an
    /// unaligned write: read the edge blocks, merge, write; or a read whose block range does
    /// not fit its buffer). Its block locks and bounce buffer are taken now and held until its
    /// last step completes.
    func submitRealigned(isRead: Bool, _ buffer: consuming PoolBuffer, bufferOffset: Int, count: Int, at offset: Int64, tag: UInt64) throws(DirectIOError) {
        let name = isRead ? "read" : "write"
        let (plan, pool) = try plan(isRead: isRead, .one(CallerSegment(address: UInt(bitPattern: buffer.baseAddress + bufferOffset), length: count)), at: offset, length: count)
        let keys = Realignment.lockKeys(plan, identity: identity)
        var bounce = try acquire(keys, bounceFrom: Realignment.needsBounce(plan) ? pool : nil, name: name, offset: offset, length: count)
        let base = bounce?.baseAddress
        let bounceSlot = engine.fixedIndex(of: bounce?.poolSlot)
        let parts = RealignedRequest.Parts(
            realignment: Realignment(plan: plan, isRead: isRead, bounce: base, offset: offset, total: count, rules: rules, descriptor: descriptor, name: name, carrier: RequestCarrier(engine.kind, waited: false)),
            bounce: bounce.take(), bounceSlot: bounceSlot, keys: keys, fd: descriptor, fileSlot: fileSlot,
            readBlock: alignment.readAlignment, writeBlock: alignment.writeAlignment, offset: offset, counters: isDirect ? counters : nil)
        try engine.submitRealigned(parts, buffer: buffer, tag: tag)
    }

    /// The plan for a realigned request and the bounce pool it draws from: the file's own
    /// pool if it was opened with one, else the engine's small buffers when the request's
    /// blocks fit one, its large ones otherwise.
    private func plan(isRead: Bool, _ segments: CallerSegments, at offset: Int64, length: Int) throws(DirectIOError) -> (TransferPlan, BufferPool) {
        let pool = sharedBouncePool ?? Realignment.bouncePool(offset: offset, length: length, block: isRead ? alignment.readAlignment : alignment.writeAlignment,
                                                              small: engine.smallBouncePool, large: engine.bouncePool)
        var plan = engine.sparePlans.take()
        try TransferPlanner.plan(segments: segments, fileOffset: offset, isWrite: !isRead,
                                 limits: PlanLimits(limits, isRead: isRead, bounceBufferBytes: pool.bufferBytes), into: &plan)
        return (plan, pool)
    }

    /// Takes the block locks, then a bounce buffer from `pool` (if given): locks first, so a
    /// caller waiting for locks holds no buffer and waiters cannot deadlock; both before any
    /// I/O, so a caller that will not wait fails having transferred nothing. Waiting never
    /// blocks on this engine's own batched requests, which hold locks and buffers until their
    /// last step and which only this thread reaps: it makes them progress instead, and blocks
    /// only on what other threads hold. On a throw nothing is held.
    private func acquire(_ keys: BlockLocks.Keys, bounceFrom pool: BufferPool?, name: String, offset: Int64, length: Int) throws(DirectIOError) -> PoolBuffer? {
        while !BlockLocks.shared.tryLock(keys) {
            guard engine.holdsRealignedRequests else {
                BlockLocks.shared.lock(keys)
                break
            }
            try engine.progress()
        }
        guard let pool else { return nil }
        var waited = false
        defer { if waited { record(TransferStatistics(bounceWaits: 1)) } }
        while true {
            if let buffer = pool.take() { return buffer }
            if !waitsForBounceBuffers {
                BlockLocks.shared.unlock(keys)
                throw DirectIOError(.wouldBlock, operation: name, path: path, offset: offset, length: length,
                                    detail: "all \(pool.count) bounce buffers are in use and this file was opened not to wait for one; nothing was transferred")
            }
            if engine.holdsRealignedRequests {
                waited = true
                do { try engine.progress() } catch {
                    BlockLocks.shared.unlock(keys)
                    throw error
                }
            } else {
                var blocked = false
                let buffer = pool.takeWaiting(waited: &blocked)
                waited = waited || blocked
                return buffer
            }
        }
    }

    /// Submits the realignment's requests until it is done: a pair goes in one
    /// io_uring_enter, so the device overlaps them. Memory in the bounce buffer uses its
    /// fixed-buffer slot; caller memory that lies in a registered pool buffer uses that one's.
    private func run(_ realignment: consuming Realignment, bounceSlot: UInt16?) throws(DirectIOError) -> Int {
        while true {
            switch try realignment.next() {
            case .done(let moved):
                record(realignment.statistics(moved: moved))
                engine.sparePlans.keep(realignment.takePlan())
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
