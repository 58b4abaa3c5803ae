// `SchedulingExecutor` is Swift 6.3's SPI for executors that run jobs after a delay.
@_spi(ExperimentalScheduling) @_spi(ExperimentalCustomExecutors) import _Concurrency

/// Swift 6.3's `Task.sleep` asks the current executor to wake the task (falling back to the
/// default executor's timers, which would resume it off the rings): the ring's executor wakes it
/// on its own thread, through the timer thread of `DelayedJobs`.
extension RingExecutor: SchedulingExecutor {
    package func enqueue<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
        let job = UnownedJob(job)
        guard let duration = delay as? Duration else {
            // A clock of the application's own: its instants mean nothing to the timer thread.
            if let timers = Task.defaultExecutor as? any SchedulingExecutor {
                timers.enqueue(ExecutorJob(job), after: delay, tolerance: tolerance, clock: clock)
            } else {
                run(job)
            }
            return
        }
        let (seconds, attoseconds) = duration.components
        let nanoseconds = seconds < 0 ? 0 : UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000).partialValue &+ UInt64(max(0, attoseconds / 1_000_000_000))
        DelayedJobs.add(job, after: nanoseconds, on: self)
    }
}
