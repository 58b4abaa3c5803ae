import CDirectIO

/// One completion as the kernel reported it.
package struct RawCompletion {
    package var userData: UInt64
    package var result: Int32
    package var flags: UInt32

    package init(userData: UInt64, result: Int32, flags: UInt32) {
        self.userData = userData
        self.result = result
        self.flags = flags
    }

    /// A flag of DirectIO's own, far above the kernel's IORING_CQE_F_* bits: the request ran
    /// as a system call on the caller's thread (`EngineBackend.enqueueWaited`), not in the ring.
    package static let ranAsSystemCall: UInt32 = 1 << 31
}

/// The completion side of a ring: the kernel appends at `tail`; DirectIO consumes at `head`.
struct CompletionQueue {
    let head: UnsafeMutablePointer<UInt32>
    let tail: UnsafeMutablePointer<UInt32>
    let overflow: UnsafeMutablePointer<UInt32>
    let mask: UInt32
    let entries: UInt32
    let cqes: UnsafeMutablePointer<dio_cqe>

    init(ring: UnsafeMutableRawPointer, offsets: dio_cqring_offsets) {
        head = (ring + Int(offsets.head)).assumingMemoryBound(to: UInt32.self)
        tail = (ring + Int(offsets.tail)).assumingMemoryBound(to: UInt32.self)
        overflow = (ring + Int(offsets.overflow)).assumingMemoryBound(to: UInt32.self)
        mask = (ring + Int(offsets.ring_mask)).assumingMemoryBound(to: UInt32.self).pointee
        entries = (ring + Int(offsets.ring_entries)).assumingMemoryBound(to: UInt32.self).pointee
        cqes = (ring + Int(offsets.cqes)).assumingMemoryBound(to: dio_cqe.self)
    }

    /// Completions posted and not yet consumed.
    var ready: UInt32 {
        // Acquire on the tail: the kernel writes a CQE, then release-stores the tail; acquiring
        // the tail makes those CQE contents visible to the reads that follow. The head is ours
        // alone, so a relaxed load is enough.
        dio_load_acquire(tail) &- dio_load_relaxed(head)
    }

    /// Completions the kernel had to drop (only possible without IORING_FEAT_NODROP).
    var droppedCount: UInt32 { dio_load_relaxed(overflow) }

    /// Copies up to `limit` posted completions to `buffer`, then frees their slots. Returns
    /// the count.
    @inline(__always)
    func consume(into buffer: UnsafeMutablePointer<RawCompletion>, limit: Int) -> Int {
        let first = dio_load_relaxed(head)
        let last = dio_load_acquire(tail)  // acquire: see above
        var index = first
        var count = 0
        while index != last && count < limit {
            let cqe = cqes[Int(index & mask)]
            buffer[count] = RawCompletion(userData: cqe.user_data, result: cqe.res, flags: cqe.flags)
            count += 1
            index &+= 1
        }
        if index != first {
            // Release: our reads of the CQEs must complete before the kernel may reuse the slots.
            dio_store_release(head, index)
        }
        return count
    }
}
