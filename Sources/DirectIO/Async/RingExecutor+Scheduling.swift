// `SchedulingExecutor` is Swift 6.3's SPI for executors that run jobs after a delay.
@_spi(ExperimentalScheduling) @_spi(ExperimentalCustomExecutors) import _Concurrency

/// Swift 6.3's `Task.sleep` asks the current executor to wake the task (falling back to the
/// default executor's timers, which would resume it off the rings): a ring's executor, and the
/// rings as the global executor, wake it on the ring it slept on, through the timer thread of
/// `DelayedJobs`.
extension RingExecutor: SchedulingExecutor {
    package func enqueue<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
        let job = UnownedJob(job)
        guard let nanoseconds = delayNanoseconds(delay) else {
            otherClock(job, after: delay, tolerance: tolerance, clock: clock)
            return
        }
        DelayedJobs.add(.preferring(job), after: nanoseconds, on: worker)
    }
}

extension GlobalRings: SchedulingExecutor {
    func enqueue<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
        let job = UnownedJob(job)
        guard let nanoseconds = delayNanoseconds(delay) else {
            otherClock(job, after: delay, tolerance: tolerance, clock: clock)
            return
        }
        DelayedJobs.add(.global(job), after: nanoseconds, on: RingExecutor.current?.worker)
    }
}

/// A delay in nanoseconds, for the clocks whose durations are `Duration` (continuous and
/// suspending); nil for an application's own clock.
private func delayNanoseconds<D: DurationProtocol>(_ delay: D) -> UInt64? {
    guard let duration = delay as? Duration else { return nil }
    let (seconds, attoseconds) = duration.components
    guard seconds >= 0 else { return 0 }
    let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
    return overflow ? .max : whole &+ UInt64(max(0, attoseconds / 1_000_000_000))
}

/// A clock of the application's own: its instants mean nothing to the timer thread, so Swift's
/// platform executor waits for it.
private func otherClock<C: Clock>(_ job: UnownedJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
    if let timers = PlatformExecutorFactory.defaultExecutor as? any SchedulingExecutor {
        timers.enqueue(ExecutorJob(job), after: delay, tolerance: tolerance, clock: clock)
    } else {
        PlatformExecutorFactory.defaultExecutor.enqueue(ExecutorJob(job))
    }
}
