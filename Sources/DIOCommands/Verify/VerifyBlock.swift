import DirectIO

/// The layout of one verification block, after fio's verify (verify.c): a header naming what
/// the block should be, a checksum of the payload, and a payload derived from the header, so
/// a block read back can say whether it is right, somewhere else's (misplaced), an older
/// version (lost write), or damaged (torn or corrupt).
///
///     0  magic      UInt64  "DIOVRFY1"
///     8  offset     UInt64  the file offset the block was written to
///    16  seed       UInt64
///    24  sequence   UInt32  which write pass
///    28  length     UInt32  block bytes
///    32  crc32c     UInt32  of bytes 40..<length
///    36  reserved   UInt32
///    40  payload
struct VerifyBlock {
    static let magic: UInt64 = 0x3159_4652_564F_4944  // "DIOVRFY1", little-endian
    static let headerBytes = 40

    /// Kinds of mismatch, as fio reports them.
    enum Verdict: Equatable {
        case good
        /// The block carries another offset's header: a write landed in the wrong place.
        case misplaced(foundOffset: UInt64)
        /// The block is intact but from an earlier pass: a write was lost.
        case lost(foundSequence: UInt32)
        /// Bad magic, length or checksum: torn or corrupt.
        case corrupt
    }

    /// Fills `bytes` with the block for `offset`, `seed`, `sequence`.
    static func fill(_ bytes: UnsafeMutableRawBufferPointer, offset: UInt64, seed: UInt64, sequence: UInt32) {
        var random = SplitMix(seed: seed ^ offset &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(sequence) << 40)
        random.fill(UnsafeMutableRawBufferPointer(rebasing: bytes[headerBytes...]))
        bytes.storeBytes(of: magic.littleEndian, toByteOffset: 0, as: UInt64.self)
        bytes.storeBytes(of: offset.littleEndian, toByteOffset: 8, as: UInt64.self)
        bytes.storeBytes(of: seed.littleEndian, toByteOffset: 16, as: UInt64.self)
        bytes.storeBytes(of: sequence.littleEndian, toByteOffset: 24, as: UInt32.self)
        bytes.storeBytes(of: UInt32(bytes.count).littleEndian, toByteOffset: 28, as: UInt32.self)
        bytes.storeBytes(of: UInt32(0), toByteOffset: 36, as: UInt32.self)
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[headerBytes...]))
        bytes.storeBytes(of: crc.littleEndian, toByteOffset: 32, as: UInt32.self)
    }

    /// Judges a block read back from `offset`, expected from pass `sequence`.
    static func check(_ bytes: UnsafeRawBufferPointer, offset: UInt64, seed: UInt64, sequence: UInt32) -> Verdict {
        guard bytes.count > headerBytes,
              UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self)) == magic,
              UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 28, as: UInt32.self)) == UInt32(bytes.count),
              UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 32, as: UInt32.self)) == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[headerBytes...]))
        else { return .corrupt }
        let foundOffset = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        if foundOffset != offset { return .misplaced(foundOffset: foundOffset) }
        let foundSequence = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 24, as: UInt32.self))
        let foundSeed = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        if foundSeed != seed { return .corrupt }
        if foundSequence < sequence { return .lost(foundSequence: foundSequence) }
        return foundSequence == sequence ? .good : .corrupt
    }
}
