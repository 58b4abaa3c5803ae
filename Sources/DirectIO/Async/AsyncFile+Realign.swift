/// Requests that break the file's alignment, from a task: the async driver of the shared
/// `Realignment` layer (`DirectFile` has the synchronous one). Block locks and bounce buffers
/// are awaited, never waited for on the thread, which may be a ring's own.
extension AsyncFile {
    nonisolated(nonsending) func transferRealigned(isRead: Bool, _ segments: CallerSegments, at offset: Int64, name: String, scope: IOScope?) async throws -> Int {
        let total = segments.total
        let pool = Realignment.bouncePool(offset: offset, length: total, block: isRead ? rules.alignment.readAlignment : rules.alignment.writeAlignment,
                                          small: smallBouncePool, large: bouncePool)
        var plan = runtime.sparePlans.take()
        try TransferPlanner.plan(
            segments: segments, fileOffset: offset, isWrite: !isRead,
            limits: PlanLimits(limits, isRead: isRead, bounceBufferBytes: pool.bufferBytes), into: &plan)
        let keys = Realignment.lockKeys(plan, identity: identity)
        await BlockLocks.shared.lock(keys)
        defer { BlockLocks.shared.unlock(keys) }
        let usesRing = runtime.usesIOUring
        guard Realignment.needsBounce(plan) else {
            return try await run(Realignment(plan: plan, isRead: isRead, bounce: nil, offset: offset, total: total, rules: rules, descriptor: descriptor, name: name, usesRing: usesRing), name: name, bounceSlot: nil, scope: scope)
        }
        // Taken after the block locks (a task waiting for locks holds no buffer, so waiters
        // cannot deadlock) and before any I/O (a caller that will not wait fails having
        // written nothing).
        var waited = false
        let taken: PoolBuffer?
        if waitsForBounceBuffers { taken = await pool.takeWaiting(waited: &waited) } else { taken = pool.take() }
        guard let buffer = taken else {
            throw DirectIOError(.wouldBlock, operation: name, path: path, offset: offset, length: total,
                                detail: "all \(pool.count) bounce buffers are in use and this file was opened not to wait for one; nothing was transferred")
        }
        // The buffer goes back only after the last request's final completion: `run` returns
        // (or throws) only then, and `buffer` lives to the end of this scope.
        let moved = try await run(Realignment(plan: plan, isRead: isRead, bounce: buffer.baseAddress, offset: offset, total: total, rules: rules, descriptor: descriptor, name: name, usesRing: usesRing),
                                  name: name, bounceSlot: buffer.poolSlot, scope: scope)
        _ = consume buffer
        if waited { counters.add(TransferStatistics(bounceWaits: 1)) }
        return moved
    }

    /// Submits the realignment's requests until it is done. A pair (head and tail blocks
    /// too far apart to read as one) goes to the ring together and is awaited as one.
    nonisolated(nonsending) private func run(_ realignment: consuming Realignment, name: String, bounceSlot: PoolSlot?, scope: IOScope?) async throws -> Int {
        let covering = covered(by: scope)
        while true {
            switch try realignment.next() {
            case .done(let moved):
                counters.add(realignment.statistics(moved: moved))
                runtime.sparePlans.keep(realignment.takePlan())
                return moved
            case .submit(let first, let second):
                let one = request(first, bounceSlot: bounceSlot, scope: covering)
                guard let second else {
                    try realignment.complete(try await perform(one, name: name, offset: first.fileOffset))
                    continue
                }
                let two = request(second, bounceSlot: bounceSlot, scope: covering)
                let (head, tail) = try await perform(one, two, name: name, offset: first.fileOffset)
                try realignment.complete(head, tail)
            }
        }
    }

    private func request(_ device: DeviceRequest, bounceSlot: PoolSlot?, scope: IOScopeState?) -> AsyncRequest {
        let blockBytes = device.isRead ? rules.alignment.readAlignment : rules.alignment.writeAlignment
        if device.vectorCount > 0 {
            return AsyncRequest(opcode: device.isRead ? .readv : .writev, fd: descriptor, address: UInt(bitPattern: device.address), length: device.vectorCount,
                                offset: device.fileOffset, blockBytes: blockBytes, scope: scope)
        }
        return AsyncRequest(opcode: device.isRead ? .read : .write, fd: descriptor, address: UInt(bitPattern: device.address), length: device.length,
                            offset: device.fileOffset, poolSlot: device.inBounceBuffer ? bounceSlot : nil, blockBytes: blockBytes, scope: scope)
    }
}
