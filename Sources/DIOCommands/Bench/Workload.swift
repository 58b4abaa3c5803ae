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
    public enum API: String, Sendable, CaseIterable { case batched, async, asyncExecutor = "async-executor", asyncScoped = "async-scoped" }

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
    /// Most completions handled per io_uring_enter (fio's iodepth_batch_complete_max); 1, the
    /// default, resubmits each finished request before reaping the next.
    public var reapBatch: Int
    public var api: API
    public var seed: UInt64

    public init(pattern: Pattern, blockBytes: Int = 4096, iodepth: Int = 32, sizeBytes: Int64 = 1 << 30,
                runtimeSeconds: Double = 5, rampSeconds: Double = 1, mode: Mode = .direct, buffers: Buffers = .registered,
                bufferOffset: Int = 0, hugePages: HugePages = .automatic, engine: IOEngine.Choice = .ioUring, reapBatch: Int = 1, api: API = .batched, seed: UInt64 = 1) {
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
        self.reapBatch = reapBatch
        self.api = api
        self.seed = seed
    }

    /// fio-style name: "randread 4k qd32".
    public var name: String { "\(pattern.rawValue) \(ByteCount.format(blockBytes)) qd\(iodepth)" }

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
        if api != .batched && bufferOffset != 0 { return "--buffer-offset needs --api batched: the async API takes aligned memory (misaligned I/O goes through DirectFile)" }
        if api != .batched && engine == .blocking { return "--engine blocking needs --api batched: the async runtime picks its engine itself (DIRECTIO_ENGINE=blocking forces it)" }
        return nil
    }
}
