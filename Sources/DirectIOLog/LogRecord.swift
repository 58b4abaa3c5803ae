import DirectIO

/// The log's on-disk format.
///
/// Block 0 is the log's header; records follow from the second block, back to back, with no
/// gap and no padding between them:
///
///     header block (at offset 0)
///          0     8  magic "DIOLOG01"
///          8     4  epoch, little-endian: how many times the log has been opened
///         12     4  CRC-32C of bytes 0..<12, little-endian
///
///     record (at any position from the second block on)
///          0     4  payload length, little-endian (at least 1; 0 marks the end)
///          4     4  epoch of the open that wrote it, little-endian
///          8     4  CRC-32C, little-endian, of: the record's position (UInt64 LE), the
///                   payload length (UInt32 LE), the epoch (UInt32 LE), the payload
///         12     n  payload
///
/// A log's valid end is the first position where no record checks: its checksum fails (torn,
/// lost or misplaced: the position is in the checksum), or its epoch is older than the record
/// before it or newer than the header's. Each open writes the header with a new epoch before
/// any append, so bytes left behind by an earlier open (a torn tail, records written after a
/// crash cut the log shorter) can never pass for records that follow newer ones.
enum LogRecord {
    static let headerBytes = 12
    static let magic: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0x44, 0x49, 0x4F, 0x4C, 0x4F, 0x47, 0x30, 0x31)  // "DIOLOG01"

    /// Writes the header and payload of a record at file position `position` to `destination`.
    static func encode(_ payload: UnsafeRawBufferPointer, position: Int64, epoch: UInt32, into destination: UnsafeMutableRawPointer) {
        destination.storeBytes(of: UInt32(payload.count).littleEndian, toByteOffset: 0, as: UInt32.self)
        destination.storeBytes(of: epoch.littleEndian, toByteOffset: 4, as: UInt32.self)
        destination.storeBytes(of: checksum(payload, position: position, epoch: epoch).littleEndian, toByteOffset: 8, as: UInt32.self)
        if let base = payload.baseAddress { (destination + headerBytes).copyMemory(from: base, byteCount: payload.count) }
    }

    static func checksum(_ payload: UnsafeRawBufferPointer, position: Int64, epoch: UInt32) -> UInt32 {
        var prefix = (UInt64(bitPattern: position).littleEndian, UInt32(payload.count).littleEndian, epoch.littleEndian)
        let crc = withUnsafeBytes(of: &prefix) { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<16])) }
        return CRC32C.checksum(payload, continuing: crc)
    }

    /// The fields of the record header at `header`; nil for the end marker (length 0).
    static func fields(at header: UnsafeRawPointer) -> (length: Int, epoch: UInt32, checksum: UInt32)? {
        let length = Int(UInt32(littleEndian: header.loadUnaligned(as: UInt32.self)))
        guard length > 0 else { return nil }
        return (length, UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
                UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
    }

    /// Writes the log header with `epoch` to `destination` (one block, zero after it).
    static func encodeLogHeader(epoch: UInt32, into destination: UnsafeMutableRawPointer, blockBytes: Int) {
        destination.initializeMemory(as: UInt8.self, repeating: 0, count: blockBytes)
        withUnsafeBytes(of: magic) { destination.copyMemory(from: $0.baseAddress.unsafelyUnwrapped, byteCount: 8) }
        destination.storeBytes(of: epoch.littleEndian, toByteOffset: 8, as: UInt32.self)
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(start: destination, count: 12))
        destination.storeBytes(of: crc.littleEndian, toByteOffset: 12, as: UInt32.self)
    }

    /// The epoch in the log header at `source`, nil when it is not a valid header.
    static func logHeaderEpoch(at source: UnsafeRawPointer) -> UInt32? {
        let isMagic = withUnsafeBytes(of: magic) { expected in sameMagic(source, expected.baseAddress.unsafelyUnwrapped) }
        guard isMagic else { return nil }
        let crc = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        guard crc == CRC32C.checksum(UnsafeRawBufferPointer(start: source, count: 12)) else { return nil }
        return UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
    }

    private static func sameMagic(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer) -> Bool {
        (0..<8).allSatisfy { a.load(fromByteOffset: $0, as: UInt8.self) == b.load(fromByteOffset: $0, as: UInt8.self) }
    }
}
