import Glibc

/// Why direct I/O will be slow or refused here, found before the first I/O: the kernel's own
/// bounce buffers (swiotlb), io_uring policy (sysctls, seccomp), RLIMIT_MEMLOCK against the
/// runtime you plan, and the path's direct-I/O limits, each problem with its consequence and
/// its fix.
///
/// A server can log it at startup:
///
/// ```swift
/// let report = Preflight.check(path: "/data", rings: 2, queueDepth: 128, poolBytes: 64 << 20)
/// for finding in report.findings { logger.warning("\(finding)") }
/// ```
///
/// `dio inspect PATH` prints the same report (`--json` for the schema in
/// docs/inspect-json.md). Nothing here fails: what cannot be read is reported as unknown.
public struct Preflight: Sendable {
    /// The path's direct-I/O limits; nil when it could not be inspected (`pathError` says why).
    public var limits: DeviceLimits?
    public var pathError: DirectIOError?
    package var kernelBounce: KernelBounce
    package var ioUring: RingAccess
    package var lockedMemory: LockedMemory
    /// Every problem found, in the order above; empty when nothing stands in the way.
    public var findings: [Finding]

    /// One problem: what is wrong, what it does to I/O, and how to fix it.
    public struct Finding: Sendable, Equatable, CustomStringConvertible {
        /// "kernel bounce", "io_uring", "locked memory" or "path".
        public var topic: String
        public var problem: String
        public var consequence: String
        public var fix: String

        public var description: String { "\(topic): \(problem). \(consequence). Fix: \(fix)." }
    }

    /// Runs every check on the live system.
    /// - Parameters:
    ///   - path: a file, block device or directory to inspect (nil: the system checks only).
    ///   - rings: the rings of the runtime you plan (`IORuntime(rings:queueDepth:)`), for the
    ///     locked-memory check.
    ///   - queueDepth: its queue depth.
    ///   - poolBytes: the bytes of a pool you plan to register with it.
    public static func check(path: String?, rings: Int? = nil, queueDepth: Int = 128, poolBytes: Int = 0) -> Preflight {
        var limits: DeviceLimits? = nil
        var pathError: DirectIOError? = nil
        if let path {
            do { limits = try DeviceLimits.of(path: path) } catch { pathError = error }
        }
        let ringCount = rings ?? Sys.onlineCores
        return Preflight(files: .live, limits: limits, pathError: pathError, tryRing: true,
                         rings: ringCount, queueDepth: queueDepth, poolBytes: poolBytes)
    }

    /// The report from the files under `files` (a fixture tree in tests) and `limits`.
    init(files: SystemFiles, limits: DeviceLimits?, pathError: DirectIOError? = nil, tryRing: Bool, rings: Int, queueDepth: Int, poolBytes: Int) {
        self.limits = limits
        self.pathError = pathError
        kernelBounce = KernelBounce(device: limits.flatMap { Self.deviceNumbers($0.device) }, path: limits?.path, files: files)
        ioUring = RingAccess(files: files, tryRing: tryRing)
        lockedMemory = LockedMemory(files: files, rings: rings, queueDepth: queueDepth, poolBytes: poolBytes)
        findings = Self.findings(kernelBounce: kernelBounce, ioUring: ioUring, lockedMemory: lockedMemory, limits: limits)
    }

    /// "25 GiB", "52 KiB", "128.1 MiB": the largest binary unit the size reaches, with one
    /// decimal when it does not divide evenly; plain bytes below 1 KiB. For reports and `dio`.
    package static func size(_ bytes: UInt64) -> String {
        for (suffix, unit) in [("GiB", UInt64(1) << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] where bytes >= unit {
            if bytes % unit == 0 { return "\(bytes / unit) \(suffix)" }
            let tenths = (bytes * 10 + unit / 2) / unit
            return "\(tenths / 10).\(tenths % 10) \(suffix)"
        }
        return "\(bytes) bytes"
    }

    /// "major:minor" as DeviceLimits writes it.
    static func deviceNumbers(_ device: String) -> (UInt32, UInt32)? {
        let parts = device.split(separator: ":")
        guard parts.count == 2, let major = UInt32(parts[0]), let minor = UInt32(parts[1]) else { return nil }
        return (major, minor)
    }
}
