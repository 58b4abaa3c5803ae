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
        guard Realignment.needsBounce(plan) else {
            return try await run(Realignment(plan: plan, isRead: isRead, bounce: nil, offset: offset, total: total, rules: rules, descriptor: descriptor, name: name, carrier: carrier), name: name, bounceSlot: nil, scope: scope)
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
        let moved = try await run(Realignment(plan: plan, isRead: isRead, bounce: buffer.baseAddress, offset: offset, total: total, rules: rules, descriptor: descriptor, name: name, carrier: carrier),
                                  name: name, bounceSlot: buffer.poolSlot, scope: scope)
        _ = consume buffer
        if waited { counters.add(TransferStatistics(bounceWaits: 1)) }
        return moved
    }

    /// Submits the realignment's requests until it is done. A pair (head and tail blocks
    /// too far apart to read as one) goes to the ring together and is awaited as one.
    nonisolated(nonsending) private func run(_ realignment: consuming Realignment, name: String, bounceSlot: PoolSlot?, scope: IOScope?) async throws -> Int {
        var realignment = realignment
        let covering = covered(by: scope)
        let step = try realignment.next()
        // A plain task (no actor, not on a ring's thread) hands each request to its ring's
        // thread and is resumed on one of Swift's: two thread crossings a request, about 6 µs
        // each on this VM. A read-modify-write (edge reads, then the write) or a transfer of
        // several device I/Os instead prefers the ring while it runs: the task moves to the
        // ring as the preference starts, submits every request there in place and is resumed
        // there, and when the preference ends the runtime switches it back to Swift's pool.
        // Two crossings for the whole transfer, and the caller's own code never runs on the
        // ring, where it would hold up the ring's other requests until it suspended (tested).
        let caller: (any Actor)? = #isolation
        guard !realignment.submittedLast, caller == nil, RingExecutor.current == nil else {
            return try await finish(&realignment, from: step, name: name, bounceSlot: bounceSlot, scope: covering)
        }
        let box = RealignmentBox(realignment)
        return try await withTaskExecutorPreference(runtime.executor(ring: home)) {
            try await self.finish(&box.value, from: step, name: name, bounceSlot: bounceSlot, scope: covering)
        }
    }

    /// Runs the realignment's steps from `step` to the end.
    nonisolated(nonsending) private func finish(_ realignment: inout Realignment, from step: Realignment.Step, name: String, bounceSlot: PoolSlot?, scope: IOScopeState?) async throws -> Int {
        var step = step
        while true {
            switch step {
            case .done(let moved):
                counters.add(realignment.statistics(moved: moved))
                runtime.sparePlans.keep(realignment.takePlan())
                return moved
            case .submit(let first, let second):
                try await submit(first, second, to: &realignment, name: name, bounceSlot: bounceSlot, scope: scope)
                step = try realignment.next()
            }
        }
    }

    /// Submits one step's requests and hands their outcomes to `realignment`.
    nonisolated(nonsending) private func submit(_ first: DeviceRequest, _ second: DeviceRequest?, to realignment: inout Realignment, name: String, bounceSlot: PoolSlot?, scope: IOScopeState?) async throws {
        let one = request(first, bounceSlot: bounceSlot, scope: scope)
        guard let second else {
            try realignment.complete(try await perform(one, name: name, offset: first.fileOffset))
            return
        }
        let two = request(second, bounceSlot: bounceSlot, scope: scope)
        let (head, tail) = try await perform(one, two, name: name, offset: first.fileOffset)
        try realignment.complete(head, tail)
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

/// A realignment driven inside a closure (by reference: Swift 6.3.1 crashes compiling a
/// noncopyable value captured by the closure).
private final class RealignmentBox {
    var value: Realignment
    init(_ value: consuming Realignment) { self.value = value }
}
