/// The direct-I/O alignment rules for one file, applied before a request reaches the kernel,
/// and used to explain an EINVAL the kernel returns anyway.
struct AlignmentCheck {
    let limits: DeviceLimits
    let isDirect: Bool

    /// Largest byte count one read or write may ask for (MAX_RW_COUNT in include/linux/fs.h:
    /// INT_MAX rounded down to a page); larger requests would be cut short by the kernel.
    static let maxRequestBytes = 0x7fff_f000
    /// Most iovecs per vectored request (IOV_MAX, UIO_MAXIOV in include/uapi/linux/uio.h).
    static let maxVectors = 1024

    /// Which limit `address`, `offset` or `length` breaks, if any.
    func violation(address: UInt, offset: Int64, length: Int, isRead: Bool) -> String? {
        guard isDirect else { return nil }
        let offsetAlignment = isRead ? limits.readOffsetAlignment : limits.offsetAlignment
        let source = limits.alignmentSource == .statx ? "statx dio_mem_align" : limits.alignmentSource.rawValue
        if !isAligned(Int(bitPattern: address), to: limits.memoryAlignment) {
            return "buffer address 0x\(String(address, radix: 16)) is not a multiple of the memory alignment \(limits.memoryAlignment) (\(source)); use a pool buffer or AlignedBuffer"
        }
        let offsetSource = limits.alignmentSource == .statx ? (isRead && limits.readOffsetAlignment != limits.offsetAlignment ? "statx dio_read_offset_align" : "statx dio_offset_align") : limits.alignmentSource.rawValue
        if !isAligned(Int(truncatingIfNeeded: offset), to: offsetAlignment) {
            return "file offset \(offset) is not a multiple of the offset alignment \(offsetAlignment) (\(offsetSource))"
        }
        if !isAligned(length, to: offsetAlignment) {
            return "length \(length) is not a multiple of the offset alignment \(offsetAlignment) (\(offsetSource))"
        }
        return nil
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
