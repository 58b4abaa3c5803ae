import SystemPackage

/// Pools pinned once for all the rings of a runtime (the seed's "lock pages down" once, not once
/// per ring): registered in the fixed-buffer table of a ring of its own, then cloned into each
/// worker ring's table (IORING_REGISTER_CLONE_BUFFERS), which shares the pinned pages instead of
/// pinning them again and charging RLIMIT_MEMLOCK again per ring.
///
/// The source ring is not a worker's: the kernel clones only from a ring without a single
/// issuer or whose issuer is the calling thread, and each worker's ring is its own thread's
/// (SINGLE_ISSUER). Nothing is ever submitted to it; any thread registers with it, under `table`.
/// Where the kernel cannot clone (before 6.13) or this ring cannot be made, each worker pins
/// the pool itself, as before.
///
/// Unchecked sendability: `ring` is set at init and only read afterwards (its `fd`, and
/// `io_uring_register` calls, which the kernel serializes); the registrations are under `table`.
package final class SharedFixedBuffers: @unchecked Sendable {
    /// Where a pool's buffers sit in the source ring's table.
    package struct Pinned: Sendable {
        let ring: Int32
        let firstSlot: Int
    }

    private struct Table: Sendable {
        var slots = FixedSlotAllocator(count: SharedFixedBuffers.slotCount)
        /// Pools pinned here, held so their memory outlives the registration.
        var pools: [ObjectIdentifier: (pool: BufferPool, firstSlot: Int)] = [:]
    }

    static let slotCount = 4096
    private let ring: UnsafeMutablePointer<IORing>
    private let table = ConditionLock(Table())

    /// nil where io_uring or its sparse buffer tables are unavailable.
    init?() {
        guard let made = try? IORing(entries: 2, flags: []) else { return nil }
        guard (try? made.registerSparseBuffers(count: UInt32(Self.slotCount))) != nil else { return nil }
        ring = .allocate(capacity: 1)
        ring.initialize(to: made)
    }

    deinit {
        // The worker rings' clones hold their own references to the pinned pages.
        ring.deinitialize(count: 1)
        ring.deallocate()
    }

    /// Pins `pool` here (once; later calls return the same slots), or nil when the kernel
    /// refuses (RLIMIT_MEMLOCK, a full table): the workers then try themselves.
    func pin(_ pool: BufferPool) -> Pinned? {
        let fd = ring.pointee.fd
        return table.withLock { table -> Pinned? in
            if let known = table.pools[ObjectIdentifier(pool)] { return Pinned(ring: fd, firstSlot: known.firstSlot) }
            guard let first = table.slots.allocate(pool.count) else { return nil }
            do { try ring.pointee.updateBuffers(first: UInt32(first), regions: pool.regions) } catch {
                table.slots.release(first, pool.count)
                return nil
            }
            table.pools[ObjectIdentifier(pool)] = (pool, first)
            return Pinned(ring: fd, firstSlot: first)
        }
    }
}
