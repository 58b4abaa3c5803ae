import CDirectIO

/// CRC-32C (Castagnoli), the checksum fio's verify and most storage systems use for blocks.
/// The shim computes it with the CPU's crc32 instruction where there is one.
package enum CRC32C {
    /// The checksum of `bytes`; pass an earlier result as `crc` to continue over more bytes.
    package static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress else { return crc }
        return dio_crc32c(crc, base, bytes.count)
    }
}
