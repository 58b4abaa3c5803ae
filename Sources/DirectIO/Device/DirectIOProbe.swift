import CDirectIO
import Glibc
import SystemPackage

/// Finds out by trying whether direct I/O works on a filesystem or device, and with which
/// alignments, for the cases statx cannot answer: tmpfs reports no STATX_DIOALIGN yet accepts
/// O_DIRECT (since 6.6); overlayfs over squashfs accepts O_DIRECT at open and fails the reads
/// (seastar#3518); kernels before 6.1 have no STATX_DIOALIGN at all. So the probe does real
/// I/O, as xfstests' src/min_dio_alignment.c and tigerbeetle's io/linux.zig do.
struct DirectIOProbe: Sendable, Equatable {
    var works: Bool
    /// Smallest memory alignment a direct read accepted (nil when not measured).
    var memoryAlignment: Int?
    /// Smallest file offset and length alignment a direct read accepted.
    var offsetAlignment: Int?
    /// What the probe saw, for reports: why direct I/O does not work, or how it was checked.
    var note: String
    /// Whether a misaligned O_DIRECT read succeeded only because the filesystem served it
    /// through the page cache (btrfs does this for anything that breaks its sector size): the
    /// kernel's own bounce, a copy the caller never sees. The alignments above are then the
    /// ones that kept reads direct, so DirectIO bounces the rest itself, counted.
    var servesMisalignedThroughPageCache = false

    /// Bytes the probe file holds: enough for devices with blocks up to 64 KiB.
    static let probeBytes = 64 * 1024

    /// Probes with a temporary file created in `directory` and removed afterwards
    /// (O_TMPFILE: it has no name, so nothing is left behind even if the process dies).
    static func inDirectory(_ directory: String) -> DirectIOProbe? {
        let fd: Int32
        do {
            fd = try Sys.open(directory, flags: DIO_O_TMPFILE | O_RDWR | O_CLOEXEC | DIO_O_DIRECT, mode: 0o600)
        } catch .invalidArgument {
            // EINVAL: either O_DIRECT or O_TMPFILE is refused. Tell them apart.
            guard let plain = try? Sys.open(directory, flags: DIO_O_TMPFILE | O_RDWR | O_CLOEXEC, mode: 0o600) else {
                return namedProbe(directory)
            }
            _ = try? Sys.close(plain)
            return DirectIOProbe(works: false, note: "the filesystem refuses O_DIRECT (open: EINVAL)")
        } catch .notSupported, .notSupportedOnSocket, .isDirectory {
            return namedProbe(directory)  // no O_TMPFILE here
        } catch {
            return nil  // cannot create files here (EACCES, EROFS, ...): nothing to probe with
        }
        defer { _ = try? Sys.close(fd) }
        return measure(fd, writeFirst: true)
    }

    /// Probe with a uniquely named file, unlinked at once, where O_TMPFILE is unsupported.
    private static func namedProbe(_ directory: String) -> DirectIOProbe? {
        let name = directory + "/.directio-probe-\(Sys.processID)-\(UInt32.random(in: 0...UInt32.max))"
        let fd: Int32
        do {
            fd = try Sys.open(name, flags: O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | DIO_O_DIRECT, mode: 0o600)
        } catch .invalidArgument {
            return DirectIOProbe(works: false, note: "the filesystem refuses O_DIRECT (open: EINVAL)")
        } catch {
            return nil
        }
        _ = try? Sys.unlink(name)
        defer { _ = try? Sys.close(fd) }
        return measure(fd, writeFirst: true)
    }

    /// Probes an existing file or block device by reopening it read-only with O_DIRECT and
    /// reading from it (it must hold at least `probeBytes`).
    static func onExisting(fd: Int32) -> DirectIOProbe {
        let probeFD: Int32
        do {
            probeFD = try Sys.open("/proc/self/fd/\(fd)", flags: O_RDONLY | O_CLOEXEC | DIO_O_DIRECT)
        } catch {
            return DirectIOProbe(works: false, note: "open with O_DIRECT failed: \(error)")
        }
        defer { _ = try? Sys.close(probeFD) }
        return measure(probeFD, writeFirst: false)
    }

    /// Writes the probe data when asked, checks that a page-aligned direct read works, then
    /// finds the smallest memory and offset alignments that still work.
    private static func measure(_ fd: Int32, writeFirst: Bool) -> DirectIOProbe {
        guard let buffer = try? AlignedBuffer(byteCount: probeBytes * 2, lock: false) else {
            return DirectIOProbe(works: false, note: "no memory for the probe buffer")
        }
        let base = buffer.baseAddress
        if writeFirst {
            memset(base, 0x5A, probeBytes)
            do {
                let written = try Sys.pwrite(fd, base, probeBytes, 0)
                guard written == probeBytes else { return DirectIOProbe(works: false, note: "direct write of the probe file was short (\(written) bytes)") }
            } catch {
                return DirectIOProbe(works: false, note: "O_DIRECT accepted at open, but a page-aligned direct write failed: \(error)")
            }
        }
        // A read "works" only if it was direct: succeeded, and cached no page of the probe
        // range. Each try starts from an uncached range so an earlier try cannot hide a later
        // one's caching. Where residency cannot be read, or the range stays cached whatever we
        // do (tmpfs: its pages are the file), a successful read counts as direct.
        //
        // btrfs also serves the odd aligned request through the cache on its own (the first
        // read after a write, then about 1 in 500 here), so a try that cached is repeated: a
        // misaligned request caches every time, an aligned one almost never twice.
        let range = probeBytes
        var servedByPageCache = false
        func reads(at offset: Int, count: Int, memoryOffset: Int) -> Bool {
            for _ in 0..<3 {
                _ = try? Sys.dropCachedPages(fd, offset: 0, length: Int64(range))
                let before = try? Sys.cachedPages(fd, length: range)
                guard (try? Sys.pread(fd, base + memoryOffset, count, Int64(offset))) == count else { return false }
                guard let before, let after = try? Sys.cachedPages(fd, length: range), after > before else { return true }
                servedByPageCache = true
            }
            return false
        }
        guard reads(at: 0, count: probeBytes, memoryOffset: 0) else {
            return DirectIOProbe(works: false, note: servedByPageCache
                ? "O_DIRECT accepted, but even a page-aligned direct read was served through the page cache"
                : "O_DIRECT accepted at open, but a page-aligned direct read failed")
        }
        var memory = Sys.pageSize
        var alignment = 1
        while alignment < Sys.pageSize {
            if reads(at: 0, count: probeBytes / 2, memoryOffset: alignment) { memory = alignment; break }
            alignment *= 2
        }
        var offset = probeBytes / 2
        alignment = 1
        while alignment < probeBytes / 2 {
            if reads(at: alignment, count: alignment, memoryOffset: 0) { offset = alignment; break }
            alignment *= 2
        }
        var probe = DirectIOProbe(works: true, memoryAlignment: memory, offsetAlignment: offset, note: "checked by direct reads")
        if servedByPageCache {
            probe.servesMisalignedThroughPageCache = true
            probe.note += "; misaligned direct reads succeed but go through the page cache (the kernel copies them), so the alignments are those that kept reads direct"
        }
        return probe
    }
}
