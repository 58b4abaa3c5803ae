/// The direct-I/O alignment rules for one file, applied before a request reaches the kernel,
/// and used to explain an EINVAL the kernel returns anyway.
struct AlignmentCheck {
    /// 1 when the file is not open for direct I/O: then nothing needs alignment.
    let memoryAlignment: Int
    let writeAlignment: Int
    let readAlignment: Int
    /// Masks for the fast test; valid when `masksApply` (every alignment a power of two, as
    /// Linux always reports them).
    private let memoryMask: UInt
    private let writeMask: UInt
    private let readMask: UInt
    private let masksApply: Bool

    init(limits: DeviceLimits, isDirect: Bool) {
        memoryAlignment = isDirect ? limits.memoryAlignment : 1
        writeAlignment = isDirect ? limits.offsetAlignment : 1
        readAlignment = isDirect ? limits.readOffsetAlignment : 1
        masksApply = [memoryAlignment, writeAlignment, readAlignment].allSatisfy { $0.nonzeroBitCount == 1 }
        memoryMask = UInt(max(memoryAlignment - 1, 0))
        writeMask = UInt(max(writeAlignment - 1, 0))
        readMask = UInt(max(readAlignment - 1, 0))
    }

    /// Largest byte count one read or write may ask for (MAX_RW_COUNT in include/linux/fs.h:
    /// INT_MAX rounded down to a page); larger requests would be cut short by the kernel.
    static let maxRequestBytes = 0x7fff_f000
    /// Most iovecs per vectored request (IOV_MAX, UIO_MAXIOV in include/uapi/linux/uio.h).
    static let maxVectors = 1024

    /// The limit a request breaks.
    enum Violation {
        case memory(address: UInt, alignment: Int)
        case offset(Int64, alignment: Int)
        case length(Int, alignment: Int)
    }

    /// Which limit `address`, `offset` or `length` breaks, if any. The common case (nothing
    /// broken) costs three mask tests and no allocation.
    @inline(__always)
    func violation(address: UInt, offset: Int64, length: Int, isRead: Bool) -> Violation? {
        let offsetMask = isRead ? readMask : writeMask
        if masksApply && (address & memoryMask) | ((UInt(truncatingIfNeeded: offset) | UInt(truncatingIfNeeded: length)) & offsetMask) == 0 {
            return nil
        }
        let offsetAlignment = isRead ? readAlignment : writeAlignment
        if !isAligned(Int(bitPattern: address), to: memoryAlignment) { return .memory(address: address, alignment: memoryAlignment) }
        if !isAligned(Int(truncatingIfNeeded: offset), to: offsetAlignment) { return .offset(offset, alignment: offsetAlignment) }
        if !isAligned(length, to: offsetAlignment) { return .length(length, alignment: offsetAlignment) }
        return nil
    }

    /// The violation in words, naming the limit and where it came from.
    static func describe(_ violation: Violation, limits: DeviceLimits, isRead: Bool) -> String {
        let fromStatx = limits.alignmentSource == .statx
        switch violation {
        case .memory(let address, let alignment):
            return "buffer address 0x\(String(address, radix: 16)) is not a multiple of the memory alignment \(alignment) (\(fromStatx ? "statx dio_mem_align" : limits.alignmentSource.rawValue)); use a pool buffer or AlignedBuffer"
        case .offset(let offset, let alignment):
            return "file offset \(offset) is not a multiple of the offset alignment \(alignment) (\(offsetSource(limits, isRead: isRead)))"
        case .length(let length, let alignment):
            return "length \(length) is not a multiple of the offset alignment \(alignment) (\(offsetSource(limits, isRead: isRead)))"
        }
    }

    private static func offsetSource(_ limits: DeviceLimits, isRead: Bool) -> String {
        guard limits.alignmentSource == .statx else { return limits.alignmentSource.rawValue }
        return isRead && limits.readOffsetAlignment != limits.offsetAlignment ? "statx dio_read_offset_align" : "statx dio_offset_align"
    }

    /// Bad arguments that no device accepts, direct or not.
    static func argumentProblem(offset: Int64, length: Int) -> String? {
        if offset < 0 { return "offset \(offset) is negative" }
        if length < 0 { return "length \(length) is negative" }
        if length > maxRequestBytes { return "length \(length) exceeds the \(maxRequestBytes)-byte maximum of one request (MAX_RW_COUNT)" }
        if offset > Int64.max - Int64(length) { return "offset \(offset) + length \(length) overflows a file offset" }
        return nil
    }
}
