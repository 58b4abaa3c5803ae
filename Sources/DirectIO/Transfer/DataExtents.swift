import CDirectIO
import SystemPackage
import Glibc

/// The data ranges of a file, from SEEK_DATA/SEEK_HOLE: what a sparse-aware copy reads; the
/// gaps between them are holes, which read as zeros and occupy no disk space.
enum DataExtents {
    /// Data ranges inside `start..<end` of `fd`, in order. Filesystems without hole
    /// reporting (and errors) give one range: everything is data, which is always correct.
    static func of(_ fd: Int32, in range: Range<Int64>) -> [Range<Int64>] {
        var extents: [Range<Int64>] = []
        var position = range.lowerBound
        while position < range.upperBound {
            let data: Int64
            do { data = try Sys.lseek(fd, position, DIO_SEEK_DATA) } catch .noSuchAddressOrDevice {
                break  // ENXIO: no data at or after `position`
            } catch {
                return [range]
            }
            guard data < range.upperBound else { break }
            let hole = (try? Sys.lseek(fd, data, DIO_SEEK_HOLE)) ?? range.upperBound
            extents.append(data..<min(max(hole, data + 1), range.upperBound))
            position = max(hole, data + 1)
        }
        return extents
    }
}
