import DirectIO

/// One benchmark job, in fio's terms.
public struct Workload: Sendable, Equatable {
    /// fio's `--rw`.
    public enum Pattern: String, Sendable, CaseIterable {
        case read, write, randread, randwrite, randrw

        var isRandom: Bool { self == .randread || self == .randwrite || self == .randrw }
        var writes: Bool { self == .write || self == .randwrite || self == .randrw }
        var reads: Bool { self == .read || self == .randread || self == .randrw }
    }

    public enum Mode: String, Sendable, CaseIterable { case direct, buffered }
    public enum Buffers: String, Sendable, CaseIterable { case registered, unregistered }
    /// batched: submit and reap in batches on one thread. async: `iodepth` tasks awaiting
    /// AsyncFile calls on the global executor. async-executor: the same tasks on the ring's
    /// own executor (no cross-thread handoff). async-scoped: those tasks with one `IOScope`
    /// each, one cancellation handler per task instead of one per call.
    /// sync: `iodepth` threads of `DirectFile` calls, each one I/O at a time, at any offset,
    /// length and memory (DirectIO realigns). posix: the same job as plain O_DIRECT pread/pwrite doing the
    /// least an unaligned request needs (reads widened to blocks; a write reads its partly
    /// covered blocks, in one pread when small, then writes the covering blocks): the floor
    /// `sync` is compared with.
    public enum API: String, Sendable, CaseIterable {
        case batched, async, asyncExecutor = "async-executor", asyncScoped = "async-scoped", sync, posix, log, logAsync = "log-async"

        var isAsync: Bool { self == .async || self == .asyncExecutor || self == .asyncScoped || self == .logAsync }
        var isLog: Bool { self == .log || self == .logAsync }
    }

    public var pattern: Pattern
    public var blockBytes: Int
    public var iodepth: Int
    /// Bytes of the file the job touches.
    public var sizeBytes: Int64
    public var runtimeSeconds: Double
    public var rampSeconds: Double
    public var mode: Mode
    public var buffers: Buffers
    /// Bytes between the start of each pool buffer and the caller's data (misaligned memory).
    public var bufferOffset: Int
    /// Back the buffer pool with huge pages (fio's --mem=mmaphuge): a 1 MiB buffer in one
    /// physically contiguous page is one DMA segment instead of 256.
    public var hugePages: HugePages
    public var engine: IOEngine.Choice
    /// Most completions handled per io_uring_enter (fio's iodepth_batch_complete_max); 1 is
    /// fio's pattern.
    public var reapBatch: Int
    /// Two: half the system calls of fio's one per enter, and still no block plug (io_uring
    /// plugs a submission of more than two requests, and this virtio disk then serves them
    /// slower: four per enter cost random writes at depth 32 up to a quarter of their IOPS).
    /// Measured in BENCHMARKS.md.
    public static let defaultReapBatch = 2
    public var api: API
    public var seed: UInt64
    /// fio's blockalign: random offsets are multiples of this (nil: of the block size).
    public var blockAlign: Int? = nil
    /// fio's bsrange: each I/O's size is drawn from this range (nil: always `blockBytes`).
    public var sizeRange: ClosedRange<Int>? = nil
    /// fio's bs_unaligned: sizes from `sizeRange` need not be multiples of its lower bound.
    public var unalignedSizes = false
    /// fio's fdatasync: a data sync after every this many writes (0: never).
    public var fdatasyncEvery = 0
    /// fio's atomic: writes that land whole or not at all (RWF_ATOMIC).
    public var atomic = false

    public init(pattern: Pattern, blockBytes: Int = 4096, iodepth: Int = 32, sizeBytes: Int64 = 1 << 30,
                runtimeSeconds: Double = 5, rampSeconds: Double = 1, mode: Mode = .direct, buffers: Buffers = .registered,
                bufferOffset: Int = 0, hugePages: HugePages = .automatic, engine: IOEngine.Choice = .ioUring, reapBatch: Int? = nil, api: API = .batched, seed: UInt64 = 1) {
        self.pattern = pattern
        self.blockBytes = blockBytes
        self.iodepth = iodepth
        self.sizeBytes = sizeBytes
        self.runtimeSeconds = runtimeSeconds
        self.rampSeconds = rampSeconds
        self.mode = mode
        self.buffers = buffers
        self.bufferOffset = bufferOffset
        self.hugePages = hugePages
        self.engine = engine
        self.reapBatch = reapBatch ?? Self.defaultReapBatch
        self.api = api
        self.seed = seed
    }

    /// fio-style name: "randread 4k qd32", "randwrite 4000 qd1 align 1", "write 1-9000 qd1 sync 64".
    public var name: String {
        let size = sizeRange.map { "\(ByteCount.format($0.lowerBound))-\(ByteCount.format($0.upperBound))" } ?? ByteCount.format(blockBytes)
        return "\(pattern.rawValue) \(size) qd\(iodepth)" + (blockAlign.map { " align \(ByteCount.format($0))" } ?? "")
            + (fdatasyncEvery > 0 ? " sync \(fdatasyncEvery)" : "") + (atomic ? " atomic" : "")
    }

    /// The largest I/O the job makes.
    var maxBlockBytes: Int { sizeRange?.upperBound ?? blockBytes }

    /// The next I/O's size: fio's bsrange (multiples of its lower bound unless bs_unaligned).
    func nextSize(_ random: inout SplitMix) -> Int {
        guard let range = sizeRange else { return blockBytes }
        let size = range.lowerBound + Int(random.next() % UInt64(range.count))
        return unalignedSizes ? size : max(range.lowerBound, size / range.lowerBound * range.lowerBound)
    }

    /// The next I/O's offset: random multiples of --blockalign (default --bs), or back to back
    /// from `sequential`, wrapping at the end of the file (appends, for --rw write).
    func nextOffset(count: Int, sizeBytes: Int64, sequential: inout Int64, _ random: inout SplitMix) -> Int64 {
        if pattern.isRandom {
            let align = Int64(blockAlign ?? blockBytes)
            return Int64(random.next() % UInt64((sizeBytes - Int64(count)) / align + 1)) * align
        }
        if sequential + Int64(count) > sizeBytes { sequential = 0 }
        defer { sequential += Int64(count) }
        return sequential
    }

    /// Whether the job makes requests that break the device's alignment on purpose.
    var unaligned: Bool { blockAlign != nil || sizeRange != nil }

    /// The standard suite `dio bench` runs without `--rw`: random 4 KiB reads at depth 32,
    /// 1 MiB sequential reads and writes at depth 8, and 1 MiB reads into caller buffers 8 bytes
    /// past a page boundary (misaligned memory).
    public static func standardSuite(sizeBytes: Int64, runtimeSeconds: Double, rampSeconds: Double, engine: IOEngine.Choice, seed: UInt64) -> [Workload] {
        [
            Workload(pattern: .randread, blockBytes: 4096, iodepth: 32, sizeBytes: sizeBytes, runtimeSeconds: runtimeSeconds, rampSeconds: rampSeconds, engine: engine, seed: seed),
            Workload(pattern: .read, blockBytes: 1 << 20, iodepth: 8, sizeBytes: sizeBytes, runtimeSeconds: runtimeSeconds, rampSeconds: rampSeconds, engine: engine, seed: seed),
            Workload(pattern: .write, blockBytes: 1 << 20, iodepth: 8, sizeBytes: sizeBytes, runtimeSeconds: runtimeSeconds, rampSeconds: rampSeconds, engine: engine, seed: seed),
            Workload(pattern: .read, blockBytes: 1 << 20, iodepth: 8, sizeBytes: sizeBytes, runtimeSeconds: runtimeSeconds, rampSeconds: rampSeconds, bufferOffset: 8, engine: engine, seed: seed),
        ]
    }

    /// Problems with the combination of options, in words; nil when it can run.
    func validate() -> String? {
        if blockBytes <= 0 { return "--bs must be positive" }
        if blockBytes > 1 << 30 { return "--bs must be at most 1g (one registered buffer's limit)" }
        if iodepth < 1 || iodepth > 4096 { return "--iodepth must be between 1 and 4096" }
        if sizeBytes < Int64(blockBytes) { return "--size (\(sizeBytes)) must hold at least one block of --bs (\(blockBytes))" }
        if runtimeSeconds <= 0 { return "--runtime must be positive" }
        if rampSeconds < 0 { return "--ramp must not be negative" }
        if bufferOffset < 0 { return "--buffer-offset must not be negative" }
        if reapBatch < 1 { return "--reap-batch must be at least 1" }
        if api.isAsync && engine == .blocking { return "--engine blocking needs --api batched, sync or posix: the async runtime picks its engine itself (DIRECTIO_ENGINE=blocking forces it)" }
        if let blockAlign, blockAlign < 1 { return "--blockalign must be at least 1" }
        if let sizeRange, sizeRange.lowerBound < 1 || sizeRange.upperBound > 1 << 30 { return "--bsrange must lie within 1...1g" }
        if sizeBytes < Int64(maxBlockBytes) { return "--size (\(sizeBytes)) must hold the largest I/O (\(maxBlockBytes))" }
        if fdatasyncEvery < 0 { return "--fdatasync must not be negative" }
        if unalignedSizes && sizeRange == nil { return "--bs-unaligned needs --bsrange" }
        if fdatasyncEvery > 0 && api == .batched {
            return "--fdatasync needs --api sync, posix or async (the batched loop keeps every request in flight and never stops to sync)"
        }
        if atomic {
            if !pattern.writes || pattern == .randrw { return "--atomic needs --rw write or randwrite" }
            if blockBytes.nonzeroBitCount != 1 { return "--atomic needs a power-of-two --bs (an atomic write's length is one)" }
            if unaligned || bufferOffset != 0 { return "--atomic writes aligned blocks: drop --blockalign, --bsrange and --buffer-offset" }
            if mode == .buffered || api == .posix { return "--atomic needs direct I/O through DirectIO: --mode direct and --api batched, sync or async" }
        }
        if api.isLog {
            if pattern != .write { return "--api \(api.rawValue) appends: use --rw write" }
            if mode == .buffered { return "--api \(api.rawValue) writes with O_DIRECT: drop --mode buffered (compare with --api posix --mode buffered)" }
            if bufferOffset != 0 || blockAlign != nil || atomic { return "--api \(api.rawValue) packs records itself: drop --buffer-offset, --blockalign and --atomic" }
        }
        if (api == .sync || api == .posix || api == .log) && iodepth > 256 { return "--api \(api.rawValue) runs a thread per --iodepth: at most 256" }
        return nil
    }
}
