import Foundation
import Glibc
import SystemPackage
import Testing
@testable import DirectIO
import DIOCommands

/// Helpers shared by the integration tests: scratch files, reference I/O through plain
/// pread/pwrite on a separate buffered descriptor, commands, loop devices and mounts.
enum TestSupport {
    static var isRoot: Bool { geteuid() == 0 }

    /// A fresh directory on the root filesystem (ext4 here); remove it with `remove`.
    static func scratchDirectory(_ name: String = #function) throws -> String {
        let clean = name.filter { $0.isLetter || $0.isNumber }
        let path = "/tmp/directio-test-\(getpid())-\(clean)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Deterministic pseudo-random bytes (splitmix64), so failures replay.
    static func pattern(count: Int, seed: UInt64) -> [UInt8] {
        var random = SplitMix(seed: seed)
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { random.fill($0) }
        return bytes
    }

    /// Writes `bytes` at `offset` with plain buffered pwrite on its own descriptor, then
    /// fsyncs, so direct reads see it.
    static func referenceWrite(_ path: String, _ bytes: [UInt8], at offset: Int64 = 0) throws {
        let fd = open(path, O_WRONLY | O_CREAT, 0o644)
        try #require(fd >= 0, "open \(path): errno \(errno)")
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        try #require(written == bytes.count, "pwrite \(path): \(written), errno \(errno)")
        try #require(fsync(fd) == 0)
    }

    /// Reads up to `count` bytes at `offset` with plain pread on its own buffered descriptor.
    static func referenceRead(_ path: String, count: Int, at offset: Int64 = 0) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0, "open \(path): errno \(errno)")
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
            try #require(got >= 0, "pread \(path): errno \(errno)")
            if got == 0 { break }
            done += got
        }
        return Array(bytes[0..<done])
    }

    /// Expects equal bytes; on a difference reports the sizes and the first differing offset
    /// instead of both arrays.
    static func expectSameBytes(_ actual: [UInt8], _ expected: [UInt8], _ context: String, sourceLocation: SourceLocation = #_sourceLocation) {
        guard actual != expected else { return }
        let first = (0..<min(actual.count, expected.count)).first { actual[$0] != expected[$0] } ?? min(actual.count, expected.count)
        Issue.record("\(context): \(actual.count) bytes, expected \(expected.count); first difference at byte \(first)", sourceLocation: sourceLocation)
    }

    /// Runs a command (found on PATH); returns its exit status, standard output and error.
    @discardableResult
    static func run(_ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String, error: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + (env["PATH"] ?? "")
        if let environment { env.merge(environment) { $1 } }
        process.environment = env
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let outData = output.fileHandleForReading.readDataToEndOfFile()
        let errData = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    /// Whether the running kernel reads MBR partition tables (loop devices then get partitions).
    static var kernelHasMSDOSPartitions: Bool {
        guard let result = try? run(["sh", "-c", "zcat /proc/config.gz 2>/dev/null | grep -q '^CONFIG_MSDOS_PARTITION=y' || grep -q '^CONFIG_MSDOS_PARTITION=y' /boot/config-$(uname -r) 2>/dev/null"]) else { return false }
        return result.status == 0
    }

    static func which(_ tool: String) -> String? {
        for directory in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
            let path = directory + "/" + tool
            if access(path, X_OK) == 0 { return path }
        }
        return nil
    }

    /// Runs the tests matching `filter` in a second process of this test bundle, with
    /// `environment` added (for what needs a process of its own: the rings installed before
    /// `main`, or a measurement other tests would disturb). Returns its status and its output
    /// and error together.
    static func runThisBundle(filter: String, environment: [String: String]) throws -> (status: Int32, output: String) {
        let bundle = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let result = try run([bundle, "--testing-library", "swift-testing", "--filter", filter], environment: environment)
        return (result.status, result.output + result.error)
    }

    /// The `dio` executable built next to this test bundle.
    static var dioExecutable: String {
        let bundle = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: bundle).deletingLastPathComponent()
        while !FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("dio").path) && directory.path != "/" {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("dio").path
    }

    // MARK: Locked memory

    /// Whether RLIMIT_MEMLOCK binds this process: no CAP_IPC_LOCK and a finite limit. `.ci/run`
    /// runs the byte-exact suites as nobody under limits of 0, 64 KiB, 100 KiB and 1 MiB, where
    /// the kernel refuses rings (their memory counts against the limit), pinned pools and
    /// zero-copy sends; DirectIO must then fall back and still be byte-exact.
    static let memlockBinds: Bool = {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let capEff = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") }
            .flatMap { UInt64($0.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces), radix: 16) } ?? 0
        let hasIPCLock = capEff & (1 << 14) != 0
        return !hasIPCLock && MemoryLimits.memlockLimitBytes != nil
    }()

    /// Skips the running test (printing why) when `error` is the kernel refusing memory while
    /// RLIMIT_MEMLOCK binds: the test's subject needs what the limit forbids. Returns
    /// otherwise, so the caller rethrows.
    static func skipIfMemlockRefused(_ error: any Error, _ what: String) throws {
        let refused = (error as? DirectIOError)?.errno == .noMemory || (error as? Errno) == .noMemory
            || "\(error)".contains("RLIMIT_MEMLOCK")
        guard memlockBinds && refused else { return }
        print("skipped: \(what) needs locked memory that RLIMIT_MEMLOCK (\(MemoryLimits.memlockLimitBytes.map { "\($0 / 1024) KiB" } ?? "unlimited")) does not allow: \(error)")
        try Test.cancel("RLIMIT_MEMLOCK refuses \(what)")
    }

    /// `body`'s result (an engine or ring it makes); the test is skipped where RLIMIT_MEMLOCK
    /// refuses it, and fails with any other error.
    static func skippingIfMemlockRefuses<T: ~Copyable>(_ what: String = "an io_uring ring", _ body: () throws -> T) throws -> T {
        do { return try body() } catch {
            try skipIfMemlockRefused(error, what)
            throw error
        }
    }

    /// Skips the test when `runtime`'s rings fell back to blocking under a binding
    /// RLIMIT_MEMLOCK and the test needs requests left in the kernel.
    static func requireRings(_ runtime: IORuntime, for what: String) throws {
        if !runtime.usesIOUring {
            try skipIfMemlockRefused(DirectIOError(.outOfMemory, operation: "create I/O runtime", detail: "RLIMIT_MEMLOCK: the rings fell back to blocking"), what)
        }
        try #require(runtime.usesIOUring, "io_uring is needed for \(what)")
    }

    /// An io_uring engine, for tests about io_uring itself; skipped where RLIMIT_MEMLOCK refuses
    /// the ring.
    static func ringEngine(queueDepth: Int = 64, ringFlags: RingSetupFlags = .anyThread, fixedFileSlots: Int = 256) throws -> IOEngine {
        try skippingIfMemlockRefuses { try IOEngine(.ioUring, queueDepth: queueDepth, ringFlags: ringFlags, fixedFileSlots: fixedFileSlots) }
    }

    /// A raw ring, skipped where RLIMIT_MEMLOCK refuses it.
    static func ring(entries: UInt32, flags: RingSetupFlags) throws -> DirectIO.IORing {
        try skippingIfMemlockRefuses { try DirectIO.IORing(entries: entries, flags: flags) }
    }

    /// Whether the pool was registered. Where RLIMIT_MEMLOCK binds, a refusal that names the
    /// limit is the fallback working (printed, false); any other refusal is an issue.
    static func registered(_ registration: BufferPool.Registration, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        if case .registered = registration { return true }
        if memlockBinds && "\(registration)".contains("RLIMIT_MEMLOCK") {
            print("fallback: \(registration)")
            return false
        }
        Issue.record("expected the pool to be registered: \(registration)", sourceLocation: sourceLocation)
        return false
    }

    /// Runs `dio` with `arguments`; skips the test where a forced io_uring engine is refused
    /// under a binding RLIMIT_MEMLOCK.
    static func runDioNeedingRings(_ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String, error: String) {
        let result = try run([dioExecutable] + arguments, environment: environment)
        if result.status != 0 && result.error.contains("RLIMIT_MEMLOCK") {
            try skipIfMemlockRefused(DirectIOError(.outOfMemory, operation: "dio \(arguments.first ?? "")", detail: result.error), "dio's forced io_uring engine")
        }
        return result
    }

    /// Parses one JSON object printed by `dio ... --json`.
    static func json(_ text: String) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8))
        return try #require(object as? [String: Any], "not a JSON object: \(text)")
    }
}

/// A loop device over a sparse image file; `detach()` must be called (use `defer`).
struct LoopDevice {
    let path: String
    let image: String

    /// Attaches a new loop device of `megabytes` with `sectorSize`-byte logical sectors.
    static func attach(megabytes: Int, sectorSize: Int, in directory: String) throws -> LoopDevice {
        let image = directory + "/loop-\(sectorSize)-\(UInt32.random(in: 0...UInt32.max)).img"
        let fd = open(image, O_RDWR | O_CREAT | O_EXCL, 0o600)
        try #require(fd >= 0)
        try #require(ftruncate(fd, off_t(megabytes) << 20) == 0)
        close(fd)
        let result = try TestSupport.run(["losetup", "--find", "--show", "--sector-size", "\(sectorSize)", image])
        if result.status != 0 { unlink(image) }
        try #require(result.status == 0, "losetup failed: \(result.error)")
        let path = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(path.hasPrefix("/dev/loop"), "losetup printed \(result.output)")
        return LoopDevice(path: path, image: image)
    }

    func detach() {
        _ = try? TestSupport.run(["losetup", "-d", path])
        unlink(image)
    }
}

/// A filesystem made on a loop device and mounted at a unique directory; `unmount()` must be
/// called (use `defer`).
struct MountedFilesystem {
    let device: LoopDevice
    let mountPoint: String

    static func make(_ type: String, megabytes: Int, sectorSize: Int = 512, in directory: String) throws -> MountedFilesystem {
        let device = try LoopDevice.attach(megabytes: megabytes, sectorSize: sectorSize, in: directory)
        let mountPoint = directory + "/mnt-\(type)-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
            // mkfs.ext4 spells "force" -F; mkfs.xfs and mkfs.btrfs spell it -f.
            let mkfs = try TestSupport.run(["mkfs.\(type)", type.hasPrefix("ext") ? "-F" : "-f", "-q", device.path])
            try #require(mkfs.status == 0, "mkfs.\(type) failed: \(mkfs.error)")
            let mount = try TestSupport.run(["mount", "-t", type, device.path, mountPoint])
            try #require(mount.status == 0, "mount failed: \(mount.error)")
        } catch {
            device.detach()
            TestSupport.remove(mountPoint)
            throw error
        }
        return MountedFilesystem(device: device, mountPoint: mountPoint)
    }

    /// Unmounts (retrying while something still holds a file there, e.g. a ring that has not
    /// yet dropped a registered descriptor), then detaches the device. A mount still busy after
    /// a second is unmounted lazily, so no run leaves one behind: two did on 2026-12-04, after
    /// `umount` failed and `losetup -d` only marked their devices to clear on unmount.
    func unmount() {
        var unmounted = false
        for attempt in 0..<10 {
            if attempt > 0 { usleep(100_000) }
            if let result = try? TestSupport.run(["umount", mountPoint]), result.status == 0 {
                unmounted = true
                break
            }
        }
        if !unmounted {
            print("\(mountPoint) still busy after 1 s: unmounting lazily")
            _ = try? TestSupport.run(["umount", "-l", mountPoint])
        }
        device.detach()
        TestSupport.remove(mountPoint)
    }
}
