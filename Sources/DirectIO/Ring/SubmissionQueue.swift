import CDirectIO

/// The submission side of a ring: where requests are written for the kernel to consume.
///
/// The SQE array is filled at `localTail`; nothing is visible to the kernel until `publish()`
/// stores the tail. The kernel owns `head` (it advances it as it consumes entries).
struct SubmissionQueue {
    let head: UnsafeMutablePointer<UInt32>
    let tail: UnsafeMutablePointer<UInt32>
    let flags: UnsafeMutablePointer<UInt32>
    let mask: UInt32
    let entries: UInt32
    let sqes: UnsafeMutablePointer<dio_sqe>
    /// The tail including entries prepared since the last `publish()`.
    private(set) var localTail: UInt32

    init(ring: UnsafeMutableRawPointer, offsets: dio_sqring_offsets, sqes: UnsafeMutablePointer<dio_sqe>, hasIndexArray: Bool) {
        head = (ring + Int(offsets.head)).assumingMemoryBound(to: UInt32.self)
        tail = (ring + Int(offsets.tail)).assumingMemoryBound(to: UInt32.self)
        flags = (ring + Int(offsets.flags)).assumingMemoryBound(to: UInt32.self)
        mask = (ring + Int(offsets.ring_mask)).assumingMemoryBound(to: UInt32.self).pointee
        entries = (ring + Int(offsets.ring_entries)).assumingMemoryBound(to: UInt32.self).pointee
        self.sqes = sqes
        // Nobody else writes the tail, and the ring is new: a plain read suffices.
        localTail = tail.pointee
        // The indirection array maps ring slots to SQE indices. DirectIO always uses slot i for
        // SQE i, so it is filled once here, as liburing does (src/setup.c, io_uring_setup_ring_pointers).
        // A ring set up with NO_SQARRAY has none (its `array` offset means nothing).
        if hasIndexArray {
            let array = (ring + Int(offsets.array)).assumingMemoryBound(to: UInt32.self)
            for index in 0..<entries { array[Int(index)] = index }
        }
    }

    /// Entries the kernel has not yet consumed, counting unpublished ones.
    var occupied: UInt32 {
        // Acquire: the kernel release-stores head after it has read the SQEs it covers, so
        // entries below the head we observe may be overwritten safely.
        localTail &- dio_load_acquire(head)
    }

    var available: UInt32 { entries &- occupied }

    /// The next free entry, zeroed, or nil when the queue is full (submit, then try again).
    mutating func nextEntry() -> UnsafeMutablePointer<dio_sqe>? {
        guard occupied < entries else { return nil }
        let sqe = sqes + Int(localTail & mask)
        sqe.initialize(to: dio_sqe())
        localTail &+= 1
        return sqe
    }

    /// Makes every prepared entry visible to the kernel; returns how many await submission.
    @discardableResult
    mutating func publish() -> UInt32 {
        // Release: the kernel must see the SQE contents written above before the new tail.
        dio_store_release(tail, localTail)
        return occupied
    }

    /// The kernel's flags word: IORING_SQ_CQ_OVERFLOW when completions wait in the overflow
    /// list, IORING_SQ_TASKRUN when task work is pending.
    var kernelFlags: UInt32 {
        // Relaxed: it is a hint; a stale value only costs one extra or one later io_uring_enter.
        dio_load_relaxed(flags)
    }
}
