/// Memory DirectIO can hand to the kernel for direct I/O: page-aligned, owned by one value.
///
/// Conformers are `~Copyable` owners (`AlignedBuffer`, `PoolBuffer`), so a buffer has exactly one
/// owner at a time. Whoever submits I/O into it must either keep it borrowed until the
/// completion is reaped (the synchronous `DirectFile` calls) or give ownership to the engine,
/// which hands it back with the completion (the batched calls).
public protocol IOBuffer: ~Copyable {
    /// Start of the memory; page-aligned.
    var baseAddress: UnsafeMutableRawPointer { get }
    /// Usable bytes.
    var count: Int { get }
    /// The pool this buffer belongs to and its index there, when it is a pool buffer; the
    /// engine uses it to find the buffer's fixed-buffer slot.
    var poolSlot: PoolSlot? { get }
}

/// Identifies one buffer of one pool.
public struct PoolSlot: Hashable, Sendable {
    let pool: ObjectIdentifier
    let index: Int
}

extension IOBuffer where Self: ~Copyable {
    /// Calls `body` with the buffer's bytes, read-only.
    public func withUnsafeBytes<R: ~Copyable, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: baseAddress, count: count))
    }

    /// Calls `body` with the buffer's bytes, writable. `mutating` so that the buffer cannot be
    /// read or submitted elsewhere while `body` writes it.
    public mutating func withUnsafeMutableBytes<R: ~Copyable, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeMutableRawBufferPointer(start: baseAddress, count: count))
    }

    /// Calls `body` with a `RawSpan` over the buffer.
    public func withBytes<R: ~Copyable, E: Error>(_ body: (RawSpan) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: baseAddress, count: count).bytes)
    }

    /// Calls `body` with a `MutableRawSpan` over the buffer.
    public mutating func withMutableBytes<R: ~Copyable, E: Error>(_ body: (inout MutableRawSpan) throws(E) -> R) throws(E) -> R {
        var span = UnsafeMutableRawBufferPointer(start: baseAddress, count: count).mutableBytes
        return try body(&span)
    }

    /// Copies the first `count` bytes out into an array (tests and tools; not for hot paths).
    public func bytes(count wanted: Int? = nil) -> [UInt8] {
        let length = min(wanted ?? count, count)
        return Array(UnsafeRawBufferPointer(start: baseAddress, count: length))
    }

    /// Copies `source` to the start of the buffer; returns how many bytes fit.
    @discardableResult
    public mutating func copy(from source: some Collection<UInt8>) -> Int {
        let length = min(source.count, count)
        let target = UnsafeMutableRawBufferPointer(start: baseAddress, count: length)
        target.copyBytes(from: source.prefix(length))
        return length
    }
}
