import CDirectIO
import Synchronization
import SystemPackage

/// An `IORuntime` installed as Swift's global executor (`IORuntime.installAsGlobalExecutor`):
/// every task without an executor preference runs on a ring's thread, so its I/O goes straight
/// into that ring and its resumption needs no other thread, the glommio/Seastar model for
/// ordinary Swift code.
///
/// The mechanism is the concurrency runtime's global enqueue hooks (what swift-nio uses to make
/// its event loops the global executor), installed at run time. Swift 6.3's other mechanism, an
/// `ExecutorFactory` (`@_spi(ExperimentalCustomExecutors)`), is chosen when the program's main
/// module is compiled (`-executor-factory`): no library can offer it to an unmodified program or
/// a test bundle, and its SPI may change. The hooks miss what the standard library enqueues on
/// `Task.currentExecutor` itself (`Task.yield`, `Task.sleep`); the rings catch those by running
/// every job as on their task executor (`RingWorker`), which is then `Task.currentExecutor`.
///
/// Placement: a job enqueued on a ring's thread (a task resumed by a completion, a task
/// yielding, a child task, a continuation resumed there) stays on that ring; jobs from other
/// threads (the main thread, NIO's event loops, another runtime's ring) go round robin. Delayed
/// jobs wait on one timer thread, then go back to the ring they came from.
///
/// The hooks are installed once and never removed: the concurrency runtime reads them without
/// synchronization, so swapping them while tasks run would race. Once the runtime's rings have
/// stopped, jobs go back to Swift's default executor.
final class GlobalRings: Sendable {
    let runtime: IORuntime
    private let next = Atomic<Int>(0)

    private init(_ runtime: IORuntime) {
        self.runtime = runtime
    }

    /// The installed runtime, set once the hooks are in place.
    static let installed = AtomicLazyReference<GlobalRings>()
    /// Serializes installs: the hooks are checked and set under it.
    private static let installing = ConditionLock<Void>(())

    /// Installs `runtime`'s rings as the global executor (the checks are the caller's). A
    /// refused install leaves everything as it was.
    static func install(_ runtime: IORuntime) throws(DirectIOError) {
        try installing.withLock { (_: inout Void) throws(DirectIOError) in
            guard installed.load() == nil else {
                throw DirectIOError(.alreadyExists, operation: "install I/O runtime as global executor", detail: "a runtime's rings already are Swift's global executor; there can be only one")
            }
            let rings = GlobalRings(runtime)
            for worker in runtime.workers { worker.servesGlobalJobs.store(true, ordering: .releasing) }
            // The hooks get the object unretained: `installed` holds it for the life of the process.
            let installedHooks = dio_install_global_executor_hooks(
                Unmanaged.passUnretained(rings).toOpaque(),
                { context, raw in
                    guard let context, let raw else { return false }
                    return Unmanaged<GlobalRings>.fromOpaque(context).takeUnretainedValue().enqueue(unsafeBitCast(raw, to: UnownedJob.self))
                },
                { _, nanoseconds, raw in
                    guard let raw else { return false }
                    DelayedJobs.add(unsafeBitCast(raw, to: UnownedJob.self), after: nanoseconds, on: RingExecutor.current)
                    return true
                })
            guard installedHooks == 0 else {
                for worker in runtime.workers { worker.servesGlobalJobs.store(false, ordering: .releasing) }
                if installedHooks == -2 {
                    throw DirectIOError(.alreadyExists, operation: "install I/O runtime as global executor", detail: "another library (swift-nio's event loops?) already installed Swift's global executor hooks")
                }
                throw DirectIOError(.unsupported, operation: "install I/O runtime as global executor", detail: "this Swift runtime has no global executor hooks (swift_task_enqueueGlobal_hook)")
            }
            _ = installed.storeIfNil(rings)
        }
    }

    /// Takes a job of the global executor; false when every ring has stopped.
    private func enqueue(_ job: UnownedJob) -> Bool {
        if let worker = RingExecutor.current?.worker, worker.servesGlobalJobs.load(ordering: .relaxed), worker.enqueue(job) {
            return true
        }
        let workers = runtime.workers
        let first = next.wrappingAdd(1, ordering: .relaxed).oldValue
        for step in 0..<workers.count where workers[(first &+ step) % workers.count].post(.job(job)) {
            return true
        }
        return false
    }
}
