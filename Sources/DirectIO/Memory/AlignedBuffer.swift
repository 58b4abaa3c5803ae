import CDirectIO
import Glibc
import SystemPackage

/// How to back a buffer with huge pages.
public enum HugePages: Sendable, Equatable, CustomStringConvertible {
    /// 4 KiB pages.
    case none
    /// MAP_HUGETLB (2 MiB pages from the reserved pool); when none are reserved, falls back to
    /// transparent huge pages and reports it.
    case preferred
    /// Ordinary mapping with MADV_HUGEPAGE: the kernel backs it with huge pages when it can.
    case transparent
    /// `.transparent` for mappings of at least one huge page (2 MiB), else `.none`. Physically
    /// contiguous buffers are what the seed documents ask for: a 1 MiB I/O from a huge page is
    /// one DMA segment, where 4 KiB pages make 256 and exceed virtio's 254-segment limit, so
    /// the kernel splits the request (measured in BENCHMARKS.md: about 2.5x the 1 MiB read
    /// bandwidth on this machine's virtio disk).
    case automatic

    public var description: String {
        switch self {
        case .none: "none"
        case .preferred: "hugetlb"
        case .transparent: "transparent"
        case .automatic: "automatic"
        }
    }
}

/// What a mapping actually got, which may be less than what was asked.
package struct MappingReport: Sendable, CustomStringConvertible {
    /// Bytes mapped (the request rounded up to the page or huge-page size).
    package let mappedBytes: Int
    /// Whether mlock succeeded: the pages stay resident and never wait on reclaim mid-I/O.
    package let locked: Bool
    /// Why mlock failed, when it did.
    package let lockError: Errno?
    /// The huge pages in use: `.preferred` only when MAP_HUGETLB succeeded.
    package let hugePages: HugePages
    /// Notes on anything that fell short of the request.
    package let notes: [String]

    package var description: String {
        var parts = ["\(mappedBytes) bytes", locked ? "locked" : "not locked"]
        if hugePages != .none { parts.append("huge pages: \(hugePages)") }
        return parts.joined(separator: ", ") + (notes.isEmpty ? "" : "; " + notes.joined(separator: "; "))
    }
}

/// A page-aligned buffer backed by its own anonymous mapping: locked in memory (mlock) so
/// direct I/O never waits for it to be paged in, and marked MADV_DONTFORK so a fork() while
/// I/O is in flight cannot copy-on-write the pages out from under the device (open(2) NOTES).
///
/// It is the unit of memory DirectIO hands to the kernel; `BufferPool` carves many buffers out
/// of one of these.
///
/// Unchecked sendability is sound for the same reason as for `PoolBuffer`: the value is the
/// mapping's only owner, so sending it moves access instead of sharing it.
public struct AlignedBuffer: ~Copyable, IOBuffer, @unchecked Sendable {
    public let baseAddress: UnsafeMutableRawPointer
    public let count: Int
    package let report: MappingReport
    public var poolSlot: PoolSlot? { nil }

    /// Maps at least `byteCount` bytes (rounded up to whole pages), zero-filled.
    /// - Parameters:
    ///   - byteCount: the bytes wanted.
    ///   - hugePages: back the buffer with huge pages (`.none`, or what the system allows).
    ///   - lock: mlock the pages. Failure (RLIMIT_MEMLOCK) is not an error: `report` says so.
    public init(byteCount: Int, hugePages: HugePages = .none, lock: Bool = true) throws(DirectIOError) {
        guard byteCount > 0 else {
            throw DirectIOError(.invalidArgument, operation: "allocate buffer", length: byteCount, detail: "size must be positive")
        }
        let mapping = try MappedRegion.map(byteCount: byteCount, hugePages: hugePages, lock: lock)
        baseAddress = mapping.address
        count = byteCount
        report = mapping.report
    }

    deinit {
        MappedRegion.unmap(baseAddress, report.mappedBytes)
    }
}

/// Mapping and unmapping of buffer memory, shared by `AlignedBuffer` and `BufferPool`.
enum MappedRegion {
    static let hugePageBytes = 2 << 20

    static func map(byteCount: Int, hugePages requested: HugePages, lock: Bool) throws(DirectIOError) -> (address: UnsafeMutableRawPointer, report: MappingReport) {
        var notes: [String] = []
        var hugePages = requested
        if requested == .automatic { hugePages = byteCount >= hugePageBytes ? .transparent : .none }
        var address: UnsafeMutableRawPointer? = nil
        var mapped = 0
        var got = HugePages.none
        if hugePages == .preferred {
            let length = roundUp(byteCount, to: hugePageBytes)
            do {
                address = try Sys.mmapAnonymous(length: length, extraFlags: DIO_MAP_HUGETLB)
                mapped = length
                got = .preferred
            } catch {
                notes.append("MAP_HUGETLB refused (\(error)): using transparent huge pages; reserve pages in /proc/sys/vm/nr_hugepages for hugetlb")
            }
        }
        if address == nil && hugePages != .none {
            // Transparent huge pages need 2 MiB-aligned, 2 MiB-sized ranges: map 2 MiB more,
            // trim the unaligned head and tail, then advise before the first touch (mlock).
            let length = roundUp(byteCount, to: hugePageBytes)
            do {
                let raw = try Sys.mmapAnonymous(length: length + hugePageBytes)
                let aligned = roundUp(Int(bitPattern: raw), to: hugePageBytes)
                let head = aligned - Int(bitPattern: raw)
                if head > 0 { try? Sys.munmap(raw, head) }
                let tail = hugePageBytes - head
                if tail > 0 { try? Sys.munmap(raw + head + length, tail) }
                address = raw + head
                mapped = length
            } catch {
                throw .system(error, operation: "allocate buffer", call: "mmap", length: length + hugePageBytes)
            }
            if let address {
                // MADV_HUGEPAGE is advice: when THP is disabled the pages stay small, which is correct, only slower.
                if (try? Sys.madvise(address, mapped, DIO_MADV_HUGEPAGE)) != nil { got = .transparent }
                else { notes.append("transparent huge pages unavailable") }
            }
        }
        if address == nil {
            let length = roundUp(byteCount, to: Sys.pageSize)
            do {
                address = try Sys.mmapAnonymous(length: length)
            } catch {
                throw .system(error, operation: "allocate buffer", call: "mmap", length: length)
            }
            mapped = length
        }
        guard let address else {
            throw DirectIOError(.outOfMemory, operation: "allocate buffer", length: byteCount, systemCall: "mmap")
        }
        // MADV_DONTFORK fails only on kernels without it (before 2.6.16) or for non-anonymous
        // memory; note it, since fork() during I/O would then need draining first.
        do { try Sys.madvise(address, mapped, DIO_MADV_DONTFORK) } catch {
            notes.append("MADV_DONTFORK refused (\(error)): drain I/O before fork()")
        }
        var locked = false
        var lockError: Errno? = nil
        if lock {
            do {
                try Sys.mlock(address, mapped)
                locked = true
            } catch {
                lockError = error
                let limit = Sys.memlockLimit().map { "\($0 / 1024) KiB" } ?? "unlimited"
                notes.append("mlock refused (\(error)): RLIMIT_MEMLOCK is \(limit), \(mapped / 1024) KiB asked; pages may be swapped between I/Os")
            }
        }
        return (address, MappingReport(mappedBytes: mapped, locked: locked, lockError: lockError, hugePages: got, notes: notes))
    }

    static func unmap(_ address: UnsafeMutableRawPointer, _ mappedBytes: Int) {
        // munmap fails only for an address or length this type never passes.
        _ = try? Sys.munmap(address, mappedBytes)
    }
}

@inline(__always)
func roundUp(_ value: Int, to alignment: Int) -> Int {
    (value + alignment - 1) / alignment * alignment
}

@inline(__always)
func isAligned(_ value: Int, to alignment: Int) -> Bool {
    alignment <= 1 || value % alignment == 0
}
