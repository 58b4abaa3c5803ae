/// Runs tasks on a ring worker's thread: a task started with
/// `withTaskExecutorPreference(runtime.executor(ring: n))` submits its I/O straight into ring
/// n and is resumed on the same thread, with no cross-thread handoff and no wake-up: the
/// thread-per-core model of glommio and Seastar, inside Swift concurrency.
///
/// Unchecked sendability: `worker` is written once, by the worker's initializer, before the
/// executor is reachable from any other thread; the worker object is itself thread-safe.
public final class RingExecutor: TaskExecutor, @unchecked Sendable {
    private weak var worker: RingWorker?

    init() {}

    func attach(_ worker: RingWorker) { self.worker = worker }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if let worker, worker.enqueue(job) { return }
        runElsewhere(job)
    }

    /// After the worker has exited, its tasks still need somewhere to run: the global pool.
    func runElsewhere(_ job: UnownedJob) {
        globalConcurrentExecutor.enqueue(job)
    }
}
