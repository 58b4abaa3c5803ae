import Synchronization

/// Jobs waiting for their time (`Task.sleep` on the rings), on one thread that sleeps until the
/// earliest is due and then hands it back to the ring it came from (or to the global executor).
/// Started on first use.
final class DelayedJobs: Sendable {
    /// The job is kept as a plain pointer with a separate flag, not as a `ReadyJob`: Swift
    /// packs an enum's case into the pointer's spare bits, and a job that waits until the
    /// process exits (a long sleep) would then look unreferenced to LeakSanitizer.
    private struct Entry: Sendable {
        let deadline: UInt64
        let job: UnownedJob
        let global: Bool
        let worker: RingWorker?

        init(deadline: UInt64, job: ReadyJob, worker: RingWorker?) {
            self.deadline = deadline
            self.worker = worker
            switch job {
            case .preferring(let unowned): (self.job, global) = (unowned, false)
            case .global(let unowned): (self.job, global) = (unowned, true)
            }
        }

        var ready: ReadyJob { global ? .global(job) : .preferring(job) }
    }

    /// Latest deadline first, so the earliest is the last element (removed in O(1)).
    private let waiting = ConditionLock<[Entry]>([])

    /// Made with its thread; a process that cannot start one more thread cannot sleep on the
    /// rings, and its sleeping tasks run after no delay rather than never.
    static let shared: DelayedJobs? = {
        let timers = DelayedJobs()
        do { try Sys.startDetachedThread { timers.run() } } catch { return nil }
        return timers
    }()

    /// Runs `job` on `worker`'s ring (nil: any ring of the global executor) once `nanoseconds`
    /// have passed.
    static func add(_ job: ReadyJob, after nanoseconds: UInt64, on worker: RingWorker?) {
        guard let timers = shared else {
            deliver(job, to: worker)
            return
        }
        let (deadline, overflow) = Sys.monotonicNanoseconds().addingReportingOverflow(nanoseconds)
        let entry = Entry(deadline: overflow ? .max : deadline, job: job, worker: worker)
        timers.waiting.updateAndBroadcast { entries in
            var low = 0, high = entries.count
            while low < high {
                let middle = (low + high) / 2
                if entries[middle].deadline > entry.deadline { low = middle + 1 } else { high = middle }
            }
            entries.insert(entry, at: low)
        }
    }

    private static func deliver(_ job: ReadyJob, to worker: RingWorker?) {
        if let worker, worker.post(.job(job)) { return }
        job.runElsewhere()
    }

    private func run() {
        while true {
            let due = waiting.wait { (entries: inout [Entry]) -> (result: [Entry]?, wakeAt: UInt64?) in
                guard let earliest = entries.last else { return (nil, nil) }
                let now = Sys.monotonicNanoseconds()
                guard earliest.deadline <= now else { return (nil, earliest.deadline) }
                var taken: [Entry] = []
                while let last = entries.last, last.deadline <= now { taken.append(entries.removeLast()) }
                return (taken, nil)
            }
            for entry in due { Self.deliver(entry.ready, to: entry.worker) }
        }
    }
}
