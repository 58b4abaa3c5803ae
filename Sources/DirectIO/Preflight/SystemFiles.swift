import Glibc

/// Reads the kernel's text interfaces (procfs, sysfs, debugfs) under a root directory: "/" on
/// a live system, a fixture tree in tests, so every reader can be tried against swiotlb forced,
/// a 32-bit DMA mask, io_uring disabled and so on without such a machine.
///
/// Every reader answers nil for a file that is missing, unreadable or malformed: a report says
/// "unknown" rather than guessing, and never traps.
struct SystemFiles: Sendable {
    /// Prefix for every absolute path read ("" for the live system).
    let root: String

    static let live = SystemFiles(root: "")

    /// `root` with links resolved, to recognise resolved paths that stay inside it.
    private let rootResolved: String

    init(root: String) {
        self.root = root == "/" ? "" : root
        rootResolved = self.root.isEmpty ? "" : (try? Sys.realpath(root)) ?? root
    }

    func text(_ path: String) -> String? { readSmallFile(root + path) }

    /// The decimal number that is the whole of file `path`.
    func number(_ path: String) -> Int? {
        text(path).flatMap { Int($0.trimmingWhitespace()) }
    }

    /// The names in directory `path`, nil when it cannot be listed (missing, or root-only).
    func entries(_ path: String) -> [String]? { try? Sys.directoryEntries(root + path) }

    func exists(_ path: String) -> Bool { Sys.exists(root + path) }

    /// `path` with links resolved, still relative to the root (nil when it does not resolve
    /// inside it).
    func resolved(_ path: String) -> String? {
        guard let full = try? Sys.realpath(root + path) else { return nil }
        guard root.isEmpty || full.hasPrefix(rootResolved + "/") else { return nil }
        return root.isEmpty ? full : String(full.dropFirst(rootResolved.count))
    }


    /// The value after "Key:" on the first line whose part before the colon, without the
    /// padding, is `key` (/proc/self/status writes "Seccomp:\t2", /proc/cpuinfo "flags\t\t: ...").
    func field(_ key: String, in path: String) -> String? {
        guard let text = text(path) else { return nil }
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":"), String(line[..<colon]).trimmingWhitespace() == key else { continue }
            return String(line[line.index(after: colon)...]).trimmingWhitespace()
        }
        return nil
    }

    // MARK: Block devices

    /// The sysfs directory of block device `major:minor` (relative to the root), with a
    /// partition resolved to its disk: a partition has no queue or device link of its own.
    func diskDirectory(major: UInt32, minor: UInt32) -> String? {
        guard var directory = resolved("/sys/dev/block/\(major):\(minor)") else { return nil }
        if exists(directory + "/partition"), let slash = directory.lastIndex(of: "/") {
            directory = String(directory[..<slash])
        }
        return directory
    }

    /// The sysfs directory of the disk behind device `major:minor`, or, for a filesystem on an
    /// anonymous device (btrfs), of the disk its mount's source names (found through `path`).
    func diskDirectory(major: UInt32, minor: UInt32, path: String?) -> String? {
        diskDirectory(major: major, minor: minor)
            ?? mountSourceDevice(major: major, minor: minor, path: path).flatMap { diskDirectory(named: $0) }
    }

    /// The sysfs directory of the disk named `name` ("vda", "loop3", "sda1"), via
    /// /sys/class/block, with a partition resolved to its disk.
    func diskDirectory(named name: String) -> String? {
        guard var directory = resolved("/sys/class/block/\(name)") else { return nil }
        if exists(directory + "/partition"), let slash = directory.lastIndex(of: "/") {
            directory = String(directory[..<slash])
        }
        return directory
    }

    /// The block device behind the mount holding device `major:minor` or, failing that, path
    /// `path`: a btrfs or overlay file has an anonymous device number with no sysfs entry, and
    /// btrfs's differs from the one its mountinfo line shows (each subvolume has its own), so
    /// the mount is then found as the longest mount point containing the path. Its source's
    /// name when that is a /dev path.
    func mountSourceDevice(major: UInt32, minor: UInt32, path: String?) -> String? {
        guard let mountinfo = text("/proc/self/mountinfo") else { return nil }
        var byPath: (length: Int, source: Substring)? = nil
        let resolvedPath = path.map { (try? Sys.realpath(root + $0)).map { root.isEmpty ? $0 : String($0.dropFirst(rootResolved.count)) } ?? $0 }
        for line in mountinfo.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 4, let separator = fields.firstIndex(of: "-"), separator + 2 < fields.count else { continue }
            let source = fields[separator + 2]
            if fields[2] == "\(major):\(minor)" { return Self.deviceName(source) }
            let mountPoint = fields[4]
            if let resolvedPath, resolvedPath == mountPoint || resolvedPath.hasPrefix(mountPoint == "/" ? "/" : mountPoint + "/"),
               mountPoint.count > byPath?.length ?? -1 {
                byPath = (mountPoint.count, source)
            }
        }
        return byPath.flatMap { Self.deviceName($0.source) }
    }

    private static func deviceName(_ source: Substring) -> String? {
        source.hasPrefix("/dev/") ? String(source.dropFirst(5)) : nil
    }
}
