/// Runs tasks on a ring worker's thread: a task started with
/// `withTaskExecutorPreference(runtime.executor(ring: n))` submits its I/O straight into ring
/// n and is resumed on the same thread, with no cross-thread handoff and no wake-up: the
/// thread-per-core model of glommio and Seastar, inside Swift concurrency.
///
/// The executor owns its worker (see `RingWorker` on ownership): an executor that outlives
/// its runtime still has a worker to ask, which refuses jobs once its thread has exited.
package final class RingExecutor: TaskExecutor {
    let worker: RingWorker

    init(_ worker: RingWorker) { self.worker = worker }

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if !worker.enqueue(job) { runElsewhere(job) }
    }

    /// After the worker has exited, its tasks still need somewhere to run: the global pool.
    func runElsewhere(_ job: UnownedJob) {
        globalConcurrentExecutor.enqueue(job)
    }
}
