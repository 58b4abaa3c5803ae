import ArgumentParser
import DirectIO
import Glibc

/// `dio bench`: an fio-class benchmark of DirectIO on a file or block device.
public struct Bench: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Measure direct I/O: IOPS, bandwidth, latency percentiles and CPU per I/O.",
        discussion: """
            With no PATH, creates a temporary file in the current directory (removed afterwards, \
            also on Ctrl-C). A PATH that does not exist is created with --size. Files the \
            benchmark creates are filled with random data before anything is timed. Without \
            --rw, runs the standard suite: 4k randread QD32, 1m read QD8, 1m write QD8, 1m read QD8 into buffers 8 bytes off a page.
            Options mean what fio's options of the same name mean.

            Examples: dio bench /data/fio.dat --rw randread --bs 4k --iodepth 32; dio bench --rw randwrite --bs 4000 --blockalign 1 --api sync --iodepth 1; dio bench --rw write --bsrange 1-9000 --bs-unaligned --fdatasync 64 --api log
            """)

    public init() {}

    @Argument(help: "File or block device (default: a temporary file in the current directory).")
    var path: String?

    @Option(help: "read, write, randread, randwrite or randrw (default: the standard suite).")
    var rw: Workload.Pattern?

    @Option(help: "Block size, e.g. 4k, 1m.")
    var bs: ByteCount = ByteCount(4096)

    @Option(help: "Requests in flight.")
    var iodepth: Int = 32

    @Option(help: "Bytes of the file to use (default: 1g for a new file, else the file's size).")
    var size: ByteCount?

    @Option(help: "Seconds measured per job.")
    var runtime: Double = 5

    @Option(help: "Seconds run before measuring (not counted).")
    var ramp: Double = 1

    @Option(help: "direct (O_DIRECT) or buffered (page cache).")
    var mode: Workload.Mode = .direct

    @Option(help: "registered (fixed buffers) or unregistered.")
    var buffers: Workload.Buffers = .registered

    @Option(help: "Start each I/O this many bytes into its buffer (misaligned memory).")
    var bufferOffset: Int = 0

    @Option(help: "Huge pages for the buffer pool: auto (transparent from 2 MiB up), none, transparent or hugetlb.")
    var hugepages: HugePageArgument = .auto

    @Option(help: "Most completions handled per system call before resubmitting (fio's iodepth_batch_complete_max; 1 is fio's pattern).")
    var reapBatch: Int = Workload.defaultReapBatch

    @Option(help: "auto (io_uring where this process may set up a ring, else blocking, said in the job's note), uring or blocking.")
    var engine: EngineArgument = .auto

    @Option(help: "batched (submit and reap in batches), async (iodepth tasks awaiting AsyncFile calls), async-executor (the same tasks on the ring's own executor), async-scoped (those tasks with one IOScope each), sync (--iodepth threads of DirectFile calls, each one I/O at a time, at any offset, length and memory), log (--iodepth threads appending --bs or --bsrange records to a DurableLog next to PATH, PATH.log, removed afterwards; durable per record, or per --fdatasync N records), log-async (the same appends from --iodepth tasks on the global executor) or posix (the same with plain O_DIRECT pread/pwrite doing the least read-modify-write: the floor for sync; with --mode buffered, plain pread/pwrite through the page cache).")
    var api: Workload.API = .batched

    @Option(help: "Random offsets are multiples of this (fio's blockalign; default: --bs). With --api sync or posix, e.g. 1.")
    var blockalign: ByteCount?

    @Option(help: "Each I/O's size drawn from MIN-MAX, e.g. 1-9000 (fio's bsrange). With --api sync or posix.")
    var bsrange: SizeRange?

    @Flag(help: "Sizes from --bsrange need not be multiples of MIN (fio's bs_unaligned).")
    var bsUnaligned = false

    @Option(help: "A data sync (fdatasync) after every N writes (fio's fdatasync). With --api sync or posix.")
    var fdatasync: Int = 0

    @Flag(help: "Writes that land whole or not at all (RWF_ATOMIC; fio's atomic): --bs a power of two within the file's atomic write units (dio inspect shows them).")
    var atomic = false

    @Option(help: "Rings of the async runtime (with the async APIs).")
    var rings: Int = 1

    @Option(name: .customLong("global-executor"), help: "Where the async APIs' tasks run: default (Swift's global executor as shipped) or rings (the runtime's rings installed as Swift's global executor, IORuntime.installAsGlobalExecutor; one runtime then serves every job).")
    var globalExecutor: GlobalExecutorArgument = .default

    public enum GlobalExecutorArgument: String, ExpressibleByArgument, CaseIterable, Sendable {
        case `default`, rings
    }

    @Flag(help: "Print one JSON object per job.")
    var json = false

    @Option(help: "Seed for offsets and data.")
    var seed: UInt64 = 1

    public enum HugePageArgument: String, ExpressibleByArgument, CaseIterable, Sendable {
        case auto, none, transparent, hugetlb
        var value: HugePages {
            switch self {
            case .auto: .automatic
            case .none: .none
            case .transparent: .transparent
            case .hugetlb: .preferred
            }
        }
    }

    public enum EngineArgument: String, ExpressibleByArgument, CaseIterable, Sendable {
        case auto, uring, blocking
        var choice: IOEngine.Choice {
            switch self {
            case .auto: .automatic
            case .uring: .ioUring
            case .blocking: .blocking
            }
        }
    }

    /// The jobs these options describe.
    func workloads(sizeBytes: Int64) -> [Workload] {
        guard let rw else {
            return Workload.standardSuite(sizeBytes: sizeBytes, runtimeSeconds: runtime, rampSeconds: ramp, engine: engine.choice, seed: seed).map {
                var job = $0
                job.mode = mode
                job.buffers = buffers
                job.api = api
                job.hugePages = hugepages.value
                job.reapBatch = reapBatch
                return job
            }
        }
        var job = Workload(pattern: rw, blockBytes: bs.bytes, iodepth: iodepth, sizeBytes: sizeBytes, runtimeSeconds: runtime, rampSeconds: ramp,
                           mode: mode, buffers: buffers, bufferOffset: bufferOffset, hugePages: hugepages.value, engine: engine.choice, reapBatch: reapBatch, api: api, seed: seed)
        job.blockAlign = blockalign?.bytes
        job.sizeRange = bsrange?.range
        job.unalignedSizes = bsUnaligned
        job.fdatasyncEvery = fdatasync
        job.atomic = atomic
        return [job]
    }

    public func validate() throws {
        if rings < 1 || rings > 64 { throw ValidationError("--rings must be between 1 and 64") }
        if globalExecutor == .rings && (!api.isAsync || api == .asyncExecutor || api == .asyncScoped) {
            throw ValidationError("--global-executor rings runs the tasks of --api async or log-async on the rings (async-executor and async-scoped choose a ring's executor themselves)")
        }
        for job in workloads(sizeBytes: Int64(size?.bytes ?? 1 << 30)) {
            if let problem = job.validate() { throw ValidationError(problem) }
        }
    }

    public func run() throws {
        do { try runJobs() } catch let error as DirectIOError {
            throw error.inCommandTerms(remedy: "run with --mode buffered to measure through the page cache")
        }
    }

    private func runJobs() throws {
        let terminal = isatty(STDERR_FILENO) == 1
        let log: (String) -> Void = { message in if !json { printError(message) } }
        let target = try BenchTarget.prepare(path: path, sizeBytes: size.map { Int64($0.bytes) }, defaultSize: 1 << 30, seed: seed, log: log)
        var results: [BenchResult] = []
        // Installed once, before any task: every async job's tasks then run on its rings.
        var installed: IORuntime? = nil
        if globalExecutor == .rings {
            let runtime = try IORuntime(rings: rings, queueDepth: max(iodepth, 128))
            try runtime.installAsGlobalExecutor()
            installed = runtime
        }
        for job in workloads(sizeBytes: target.sizeBytes) {
            let progress: BenchRunner.Progress? = terminal && !json ? { elapsed, ios in
                let rate = elapsed > job.rampSeconds ? Double(ios) / (elapsed - job.rampSeconds) : 0
                printError("\r\(job.name): \(BenchResult.format(elapsed, digits: 1)) s, \(BenchResult.format(rate, digits: 0)) IOPS   ", newline: false)
            } : nil
            let swiotlbBefore = Preflight.KernelBounce.swiotlbSlotsInUse()
            var result = switch job.api {
            case .batched: try BenchRunner.run(job, path: target.path, sizeBytes: target.sizeBytes, progress: progress)
            case .sync, .posix, .log: try SyncBenchRunner.run(job, path: target.path, sizeBytes: target.sizeBytes)
            case .async, .asyncExecutor, .asyncScoped, .logAsync: try AsyncBenchRunner.run(job, path: target.path, sizeBytes: target.sizeBytes, rings: rings, installed: installed)
            }
            result.swiotlbSlotsUsedBefore = swiotlbBefore
            result.swiotlbSlotsUsedAfter = Preflight.KernelBounce.swiotlbSlotsInUse()
            if progress != nil { printError("\r" + String(repeating: " ", count: 60) + "\r", newline: false) }
            if json { print(result.json.rendered) }
            results.append(result)
        }
        if !json {
            print("dio bench on \(target.displayName) (\(ByteCount.format(Int(target.sizeBytes)))), \(runtime) s per job after \(ramp) s ramp")
            print(BenchResult.table(results))
            for result in results where !result.notes.isEmpty {
                print("note (\(result.workload.name)): " + result.notes.joined(separator: "; "))
            }
            // DirectIO's own bounce is in the table; the kernel's (swiotlb) is invisible to it.
            let kernel = results.map { result in
                guard let before = result.swiotlbSlotsUsedBefore, let after = result.swiotlbSlotsUsedAfter else { return "unknown" }
                return "\(before) → \(after)"
            }
            if kernel.allSatisfy({ $0 == "unknown" }) {
                print("kernel bounce (swiotlb slots in use): unknown (debugfs not mounted at /sys/kernel/debug or not readable; `dio inspect` says which)")
            } else {
                print("kernel bounce (swiotlb slots in use before → after each job): " + zip(results, kernel).map { "\($0.workload.name) \($1)" }.joined(separator: ", "))
            }
        }
    }
}

extension Workload.Pattern: ExpressibleByArgument {}
extension Workload.Mode: ExpressibleByArgument {}
extension Workload.Buffers: ExpressibleByArgument {}
extension Workload.API: ExpressibleByArgument {}

/// Writes to standard error (the `stderr` global is not concurrency-safe in Swift 6).
func printError(_ message: String, newline: Bool = true) {
    let text = message + (newline ? "\n" : "")
    _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
}
