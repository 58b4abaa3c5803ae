import CDirectIO

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

    /// The executor of the ring whose thread is calling, if any (a thread-local its worker
    /// sets while its loop runs).
    static var current: RingExecutor? {
        guard let raw = dio_current_ring_executor() else { return nil }
        // The thread holds its executor until it exits, and clears this before it does.
        return Unmanaged<RingExecutor>.fromOpaque(raw).takeUnretainedValue()
    }

    package func enqueue(_ job: consuming ExecutorJob) {
        run(UnownedJob(job))
    }

    /// Runs `job` on the ring's thread, or elsewhere once the ring has stopped.
    func run(_ job: UnownedJob) {
        let ready = ReadyJob.preferring(job)
        if !worker.enqueue(ready) { ready.runElsewhere() }
    }
}
