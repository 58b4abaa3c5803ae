/// The limits a plan must respect: the device's (from `DeviceLimits`) and DirectIO's own.
package struct PlanLimits: Sendable, Equatable {
    /// Memory addresses of direct pieces must be multiples of this (power of two).
    package var memoryAlignment: Int
    /// File offsets and piece lengths must be multiples of this (power of two); for reads, the
    /// read offset alignment.
    package var offsetAlignment: Int
    /// Largest device I/O (max_sectors_kb; and at most MAX_RW_COUNT).
    package var maxIOBytes: Int
    /// Most pieces (iovecs) per device I/O (max_segments, and at most IOV_MAX).
    package var maxSegments: Int
    /// Largest piece (max_segment_size).
    package var maxSegmentBytes: Int
    /// Bounce memory one device I/O may use (one bounce buffer).
    package var bounceBufferBytes: Int

    package init(memoryAlignment: Int, offsetAlignment: Int, maxIOBytes: Int, maxSegments: Int, maxSegmentBytes: Int, bounceBufferBytes: Int) {
        self.memoryAlignment = memoryAlignment
        self.offsetAlignment = offsetAlignment
        self.maxIOBytes = maxIOBytes
        self.maxSegments = maxSegments
        self.maxSegmentBytes = maxSegmentBytes
        self.bounceBufferBytes = bounceBufferBytes
    }

    /// The limits for reads or writes on a file with `limits`, using bounce buffers of
    /// `bounceBufferBytes`.
    package init(_ limits: DeviceLimits, isRead: Bool, bounceBufferBytes: Int) {
        // Plain optional unwrapping: Swift 6.3.1's release optimizer crashed (CopyPropagation,
        // "Found outside of lifetime use") on flatMap closures over these computed properties.
        var maxIO = AlignmentCheck.maxRequestBytes
        var segments = AlignmentCheck.maxVectors
        var segmentBytes = AlignmentCheck.maxRequestBytes
        if let queue = limits.queue {
            if queue.maxIOBytes > 0 { maxIO = min(queue.maxIOBytes, maxIO) }
            if queue.maxSegments > 0 { segments = min(queue.maxSegments, segments) }
            if queue.maxSegmentBytes > 0 { segmentBytes = queue.maxSegmentBytes }
        }
        self.init(
            memoryAlignment: limits.memoryAlignment,
            offsetAlignment: isRead ? limits.readOffsetAlignment : limits.offsetAlignment,
            maxIOBytes: maxIO, maxSegments: segments, maxSegmentBytes: segmentBytes,
            bounceBufferBytes: bounceBufferBytes)
    }

    /// The granule every piece is cut to: both alignments at once.
    var granule: Int { max(memoryAlignment, offsetAlignment) }

    /// Why these limits cannot be planned with, or nil.
    var problem: String? {
        // Checked on every plan: no array of the two here (it would be built each time).
        if memoryAlignment < 1 || memoryAlignment.nonzeroBitCount != 1 { return "memory alignment \(memoryAlignment) is not a power of two" }
        if offsetAlignment < 1 || offsetAlignment.nonzeroBitCount != 1 { return "offset alignment \(offsetAlignment) is not a power of two" }
        if maxIOBytes < offsetAlignment { return "max I/O bytes \(maxIOBytes) is below the offset alignment \(offsetAlignment)" }
        if maxSegments < 1 { return "max segments must be at least 1" }
        if maxSegmentBytes < granule { return "max segment bytes \(maxSegmentBytes) is below the alignment granule \(granule)" }
        if bounceBufferBytes < offsetAlignment { return "bounce buffers of \(bounceBufferBytes) bytes cannot hold one \(offsetAlignment)-byte block" }
        return nil
    }
}
