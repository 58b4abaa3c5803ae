import DirectIO
import Glibc

/// The file a benchmark runs on, prepared so that every timed read reaches the device: a file
/// the benchmark creates is written in full with random data first (reads of holes never reach
/// the disk and would measure nothing).
final class BenchTarget {
    /// The path jobs open.
    let path: String
    /// What to call it in reports.
    let displayName: String
    /// Bytes the jobs may touch.
    let sizeBytes: Int64
    /// For a temporary file: the descriptor that keeps the (already unlinked) file alive.
    private let keeper: Int32?

    private init(path: String, displayName: String, sizeBytes: Int64, keeper: Int32?) {
        self.path = path
        self.displayName = displayName
        self.sizeBytes = sizeBytes
        self.keeper = keeper
    }

    deinit {
        if let keeper { close(keeper) }
    }

    /// - Parameters:
    ///   - path: nil for a temporary file in the current directory.
    ///   - sizeBytes: bytes to use; nil means the existing file's or device's size, or
    ///     `defaultSize` for a file that does not exist yet.
    static func prepare(path: String?, sizeBytes: Int64?, defaultSize: Int64, seed: UInt64, log: (String) -> Void) throws -> BenchTarget {
        guard let path else {
            // The name is removed as soon as the file is open, so the file disappears when the
            // process ends, whether it finishes, is interrupted (Ctrl-C) or killed. Jobs reopen
            // it through /proc/self/fd.
            let name = "./.dio-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw DirectIOError.system(.init(rawValue: errno), operation: "create benchmark file", call: "open", path: name)
            }
            unlink(name)
            let target = BenchTarget(path: "/proc/self/fd/\(fd)", displayName: "temporary file in .", sizeBytes: sizeBytes ?? defaultSize, keeper: fd)
            try fill(target.path, from: 0, to: target.sizeBytes, seed: seed, log: log)
            return target
        }
        let limits = access(path, F_OK) == 0 ? try DeviceLimits.of(path: path) : nil
        if let limits, limits.isBlockDevice {
            let device = try DirectFile(path: path, options: OpenOptions(access: .readOnly, directIO: .preferred))
            let capacity = try device.size()
            return BenchTarget(path: path, displayName: path, sizeBytes: min(sizeBytes ?? capacity, capacity), keeper: nil)
        }
        var existing: Int64 = 0
        if limits != nil {
            var st = stat()
            if stat(path, &st) == 0 { existing = Int64(st.st_size) }
        }
        let size = sizeBytes ?? (existing > 0 ? existing : defaultSize)
        if existing < size {
            try fill(path, from: existing, to: size, seed: seed, log: log)
        }
        return BenchTarget(path: path, displayName: path, sizeBytes: size, keeper: nil)
    }

    /// Writes random data over [from, to) with direct writes, 1 MiB at a time, 8 in flight.
    private static func fill(_ path: String, from: Int64, to end: Int64, seed: UInt64, log: (String) -> Void) throws {
        let chunk = 1 << 20
        let engine = try IOEngine(.automatic, queueDepth: 8)
        let pool = try BufferPool(count: 8, bufferBytes: chunk)
        engine.register(pool)
        let file = try DirectFile(path: path, options: OpenOptions(access: .readWrite, directIO: .preferred, create: true), engine: engine)
        // Start on a block boundary, so direct writes stay aligned.
        let block = Int64(max(file.limits.offsetAlignment, 4096))
        var offset = from / block * block
        log("preparing the benchmark file: writing \(ByteCount.format(Int(end - offset))) of random data")
        var random = SplitMix(seed: seed ^ 0xF111)
        var failure: DirectIOError? = nil
        while offset < end || engine.inFlight > 0 {
            while offset < end, var buffer = pool.take() {
                buffer.withUnsafeMutableBytes { random.fill($0) }
                let count = Int(min(Int64(chunk), end - offset))
                // The tail may be shorter than the block: write the whole block, then trim.
                let rounded = Int(min(Int64(chunk), (Int64(count) + block - 1) / block * block))
                try file.submitWrite(buffer, count: rounded, at: offset, tag: UInt64(offset))
                offset += Int64(count)
            }
            try engine.reap(minimum: 1) { completion in
                if let errno = completion.outcome.errno, failure == nil {
                    failure = .system(errno, operation: "prepare benchmark file", call: "write", path: path, offset: Int64(bitPattern: completion.tag))
                }
            }
            if let failure { throw failure }
        }
        if try file.size() > end { try truncateFile(path, to: end) }
        try file.sync(dataOnly: true)
    }

    private static func truncateFile(_ path: String, to size: Int64) throws {
        guard truncate(path, off_t(size)) == 0 else {
            throw DirectIOError.system(.init(rawValue: errno), operation: "prepare benchmark file", call: "truncate", path: path)
        }
    }
}
