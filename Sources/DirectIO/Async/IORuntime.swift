import Glibc
import Logging
import Synchronization

/// The rings async I/O runs on: by default one per core, each with its own thread, engine and
/// executor. Any task may await I/O on any runtime; no thread blocks per I/O in flight.
///
/// ```swift
/// let runtime = try IORuntime.shared()          // or IORuntime(rings: 4, queueDepth: 256)
/// let file = try AsyncFile(path: "/data/table.db", runtime: runtime)
/// let n = try await file.read(into: &buffer, at: 0)
/// ```
///
/// Tasks that want the thread-per-core model run on a ring's own executor and submit without
/// any cross-thread handoff: `await withTaskExecutorPreference(runtime.executor(ring: 0)) { ... }`.
public final class IORuntime: Sendable {
    /// Each ring's executor, which owns the ring's worker.
    let executors: [RingExecutor]
    /// The executors' workers, kept as an array for the lookup every request makes.
    let workers: [RingWorker]
    /// Bounce buffers for async requests that break a file's alignment, made with the runtime
    /// (and registered with every ring where pinning is charged to no limit): a task waiting
    /// for one waits for a buffer that exists, never for memory that may fail to appear (the
    /// seed's emergency pool). Requests whose blocks fit 8 KiB take one of
    /// `smallBouncePool`'s, one per request the rings can hold, so small unaligned I/O never
    /// waits for a buffer; larger ones share `bouncePool`'s few large buffers.
    public let bouncePool: BufferPool
    public let smallBouncePool: BufferPool
    /// Plans of finished realigned requests, planned into again by the next.
    let sparePlans: SparePlans
    /// Where registered pools are pinned once for all the rings (nil without io_uring).
    let sharedBuffers: SharedFixedBuffers?
    private let nextHome = Atomic<Int>(0)
    /// Where limitations and fallbacks are said (`init`'s `logger`).
    let logger: Logger?

    private static let sharedRuntime = ConditionLock<IORuntime?>(nil)

    /// The process's default runtime, made on first use (one ring per online core).
    public static func shared() throws(DirectIOError) -> IORuntime {
        try sharedRuntime.withLock { (runtime: inout IORuntime?) throws(DirectIOError) -> IORuntime in
            if let runtime { return runtime }
            let made = try IORuntime()
            runtime = made
            return made
        }
    }

    /// - Parameters:
    ///   - rings: rings (and threads); default one per online core.
    ///   - queueDepth: requests in the kernel at once per ring; more wait in order.
    ///   - engine: `.automatic` (io_uring where it works), or `.blocking` to have each ring's
    ///     thread make blocking system calls (tests, sandboxes without io_uring).
    ///   - bounceBuffers: how many large bounce buffers unaligned requests beyond 8 KiB of
    ///     blocks share (each realigned request holds one from its first device I/O to its
    ///     last); more wait for one. Smaller requests have `rings × queueDepth` small ones.
    ///   - bounceBufferBytes: each large one's size; larger requests go through in pieces.
    ///   - logger: where the runtime and its rings say, at info, what makes them slower than
    ///     they could be (no io_uring, pools left unregistered, files on the page cache), with
    ///     `directio.*` metadata (`directio.ring` for each ring's own). Nothing per I/O.
    public convenience init(rings: Int? = nil, queueDepth: Int = 128, engine: IOEngine.Choice = .automatic,
                            bounceBuffers: Int = 8, bounceBufferBytes: Int = 256 << 10, logger: Logger? = nil) throws(DirectIOError) {
        try self.init(rings: rings, queueDepth: queueDepth, engine: engine, bounceBuffers: bounceBuffers, bounceBufferBytes: bounceBufferBytes, logger: logger, wrappingBackend: nil)
    }

    /// A runtime whose rings' kernel-facing backends are wrapped (DirectIOTesting's faults).
    package init(rings: Int?, queueDepth: Int, engine: IOEngine.Choice, bounceBuffers: Int, bounceBufferBytes: Int, logger: Logger? = nil,
                 wrappingBackend wrap: (@Sendable (any EngineBackend) -> any EngineBackend)?) throws(DirectIOError) {
        let count = rings ?? Sys.onlineCores
        guard count >= 1 && count <= 1024, queueDepth >= 1 && queueDepth <= 16_383 else {
            throw DirectIOError(.invalidArgument, operation: "create I/O runtime", detail: "rings must be 1...1024 and queue depth 1...16383 (got \(count), \(queueDepth))")
        }
        var executors: [RingExecutor] = []
        for ring in 0..<count {
            let ringLogger = logger.map { logger -> Logger in
                var ringLogger = logger
                ringLogger[metadataKey: "directio.ring"] = "\(ring)"
                return ringLogger
            }
            do { executors.append(try RingWorker.start(queueDepth: queueDepth, engine: engine, logger: ringLogger, wrap: wrap)) } catch {
                for executor in executors { executor.worker.stopDetached() }
                throw error
            }
        }
        // Made after the rings: under a tight RLIMIT_MEMLOCK the rings need it more (a pool
        // that cannot be locked works unlocked, a ring that cannot be made falls back).
        let pool: BufferPool
        let smallPool: BufferPool
        do {
            pool = try BufferPool.reserve(count: bounceBuffers, bufferBytes: bounceBufferBytes)
            smallPool = try BufferPool.reserve(count: min(count * queueDepth, 4096), bufferBytes: Realignment.smallBounceBytes)
        } catch {
            for executor in executors { executor.worker.stopDetached() }
            throw error
        }
        self.executors = executors
        self.workers = executors.map(\.worker)
        self.logger = logger
        self.bouncePool = pool
        self.smallBouncePool = smallPool
        self.sparePlans = SparePlans(limit: min(count * queueDepth, 4096))
        sharedBuffers = executors.first?.worker.isRing == true ? SharedFixedBuffers() : nil
        // Before any request can reach a ring (a refused registration leaves the pool usable),
        // where pinning is charged to no limit (`MemoryLimits.pinningIsFree`).
        if MemoryLimits.pinningIsFree {
            let sharedSmall = sharedBuffers?.pin(smallPool)
            let sharedLarge = sharedBuffers?.pin(pool)
            for worker in workers {
                worker.post(.register(smallPool, sharedSmall, nil))
                worker.post(.register(pool, sharedLarge, nil))
            }
        }
    }

    deinit {
        // Nothing can await a runtime nobody holds: let the threads finish what they have.
        for worker in workers { worker.stopDetached() }
    }

    public var ringCount: Int { workers.count }

    /// Whether io_uring serves the rings (else each worker drives the blocking engine).
    public var usesIOUring: Bool { workers.first?.isRing ?? false }

    /// Makes this runtime's rings Swift's global executor, for the rest of the process: every
    /// task without an executor preference then runs on a ring's thread and submits its I/O
    /// there with no handoff (the thread-per-core model, for code that never asks for it).
    ///
    /// Call it first thing in `main`, before any task starts (or set
    /// `DIRECTIO_GLOBAL_EXECUTOR=rings` in the environment, which installs the shared runtime
    /// before `main`). It is refused from a task other than the main one, and once any runtime
    /// is installed. The runtime becomes `IORuntime.shared()` if none was made yet.
    ///
    /// What changes:
    /// - Blocking a ring's thread (a lock held long, a synchronous `DirectFile` call, `sleep`)
    ///   stalls every task on that ring and its I/O completions: as on NIO's event loops, keep
    ///   blocking work off it (a thread of your own, or `DirectFile` from a thread).
    /// - A task stays on the ring it was first run on, and its child tasks start there too;
    ///   tasks made from other threads are spread round robin. A CPU-bound task shares its
    ///   ring's thread with the I/O tasks there: between rounds of ready tasks the ring reaps
    ///   completions, so I/O still completes when the CPU-bound task suspends or yields
    ///   (`await Task.yield()`), but not while it runs without suspending.
    /// - `Task.sleep` wakes on the ring the task slept on, through one timer thread.
    /// - The main actor stays on the main thread.
    public func installAsGlobalExecutor() throws(DirectIOError) {
        let inTask = withUnsafeCurrentTask { $0 != nil }
        if inTask && !Sys.isMainThread {
            throw DirectIOError(.invalidArgument, operation: "install I/O runtime as global executor",
                                detail: "tasks have started: the global executor must be chosen before any task runs (first thing in main, or DIRECTIO_GLOBAL_EXECUTOR=rings)")
        }
        try GlobalRings.install(self)
        Self.sharedRuntime.withLock { shared in
            if shared == nil { shared = self }
        }
        logger?.info("I/O runtime's rings are Swift's global executor", metadata: ["directio.rings": "\(workers.count)"])
    }

    /// The runtime whose rings are Swift's global executor, if one was installed.
    public static var globalExecutorRuntime: IORuntime? { GlobalRings.installed.load()?.runtime }

    /// The executor of ring `ring`: tasks that prefer it run on that ring's thread and submit
    /// without a handoff.
    public func executor(ring: Int) -> any TaskExecutor {
        executors[min(max(ring, 0), executors.count - 1)]
    }

    /// Each ring's engine counters (retries, resubmissions, fixed-buffer requests...), read on
    /// its own thread; a ring that has exited reports what it had.
    package func ringStatistics() async -> [EngineStatistics] {
        var all: [EngineStatistics] = []
        for worker in workers {
            let counted = await suspend { (done: UnsafeContinuation<EngineStatistics, Never>) in
                if !worker.post(.statistics({ done.resume(returning: $0) })) { done.resume(returning: EngineStatistics()) }
            }
            all.append(counted)
        }
        return all
    }

    /// Registers `pool` as fixed buffers with every ring. Its pages are pinned (and charged to
    /// RLIMIT_MEMLOCK) once for all the rings where the kernel can share them (6.13+), else
    /// once per ring.
    public func register(_ pool: BufferPool) async {
        let shared = sharedBuffers?.pin(pool)
        for worker in workers {
            await suspend { (done: UnsafeContinuation<Void, Never>) in
                if !worker.post(.register(pool, shared, { done.resume() })) { done.resume() }
            }
        }
    }

    /// Stops the rings. By default waits for every I/O in flight to finish; with
    /// `cancellingInFlight`, cancels them (their callers get `CancellationError` or their real
    /// outcome if the kernel finished first). Either way no buffer is released while the
    /// kernel may use it. I/O started afterwards fails with `.cancelled`.
    public func shutdown(cancellingInFlight: Bool = false) async {
        for worker in workers {
            await suspend { (done: UnsafeContinuation<Void, Never>) in
                if !worker.post(.stop(cancelInFlight: cancellingInFlight, done)) { done.resume() }
            }
        }
    }

    /// The worker a request from the calling thread goes to: the worker whose thread this is
    /// (no handoff), else the file's home ring.
    func worker(home: Int) -> RingWorker {
        for worker in workers where worker.isCurrent { return worker }
        return workers[home % workers.count]
    }

    /// Closes an async file's descriptor after every ring has dropped it from its fixed-file
    /// table (the file has no request left: it is being deinitialized).
    func closeDescriptor(_ fd: Int32) {
        let release = DescriptorRelease(fd: fd, rings: workers.count)
        for worker in workers where !worker.post(.forget(release)) { release.done() }
    }

    /// A home ring for a new file, round robin.
    func assignHome() -> Int {
        nextHome.wrappingAdd(1, ordering: .relaxed).oldValue % workers.count
    }
}

/// `DIRECTIO_GLOBAL_EXECUTOR=rings`: called by CDirectIO's constructor before `main`, when no
/// task can have started. A failure is said on standard error and leaves Swift's default
/// executor in place: the program still runs, only slower.
@_cdecl("dio_install_rings_from_environment")
func installRingsFromEnvironment() {
    do {
        try IORuntime.shared().installAsGlobalExecutor()
    } catch {
        let message = "DirectIO: DIRECTIO_GLOBAL_EXECUTOR=rings: \(error); tasks stay on Swift's default executor\n"
        var bytes = Array(message.utf8)
        _ = try? Sys.write(2, &bytes, bytes.count)
    }
}
