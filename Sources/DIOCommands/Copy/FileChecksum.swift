import DirectIO
import Glibc

/// CRC-32C of a whole file, read with O_DIRECT where the filesystem allows (so the copy is
/// checked as the device holds it, not as the page cache remembers it).
enum FileChecksum {
    static func crc32c(of descriptor: Int32, label: String) throws(DirectIOError) -> UInt32 {
        let file = try DirectFile(path: "/proc/self/fd/\(descriptor)", options: OpenOptions(access: .readOnly, directIO: .preferred))
        var buffer = try AlignedBuffer(byteCount: 1 << 20)
        var crc: UInt32 = 0
        var offset: Int64 = 0
        while true {
            let count: Int
            do { count = try file.read(into: &buffer, at: offset) } catch {
                var error = error
                error.path = label
                throw error
            }
            if count == 0 { break }
            crc = buffer.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<count]), continuing: crc) }
            offset += Int64(count)
            if count < buffer.count { break }  // a short read is the end of the file
        }
        return crc
    }
}
