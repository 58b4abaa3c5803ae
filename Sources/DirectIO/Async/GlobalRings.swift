@_spi(ExperimentalCustomExecutors) import _Concurrency
import CDirectIO
import Synchronization
import SystemPackage

/// An `IORuntime` installed as Swift's global executor (`IORuntime.installAsGlobalExecutor`):
/// every task without an executor preference runs on a ring's thread, so its I/O goes straight
/// into that ring and its resumption needs no other thread, the glommio/Seastar model for
/// ordinary Swift code.
///
/// Two ways in, both taken at install, before any task runs:
/// - the concurrency runtime's global enqueue hooks (what swift-nio uses for its event loops),
///   through which the runtime's C++ side enqueues (new tasks, resumed continuations);
/// - Swift 6.3's default executor (`_createExecutors(factory:)`, SPI), which the standard
///   library's Swift side asks for (`Task.yield` and `Task.sleep` go to `Task.currentExecutor`)
///   and against which the runtime checks a task's executor at each resumption. Global jobs run
///   on this object as their task executor, so a task without a preference is where the runtime
///   expects it and never hops.
///
/// Swift 6.3 also lets a program choose its default executor when its main module is compiled
/// (`-executor-factory`), which no library can do for an unmodified program or a test bundle.
///
/// Placement: a job enqueued on a ring's thread (a task resumed by a completion, a task
/// yielding, a child task) stays on that ring; jobs from other threads (the main thread, NIO's
/// event loops, another runtime's ring) go round robin. Delayed jobs wait on one timer thread,
/// then go back to the ring they came from.
///
/// Installed once and never removed: the runtime reads the hooks and the default executor
/// without synchronization, so changing them while tasks run would race. Once the runtime's
/// rings have stopped, jobs go to Swift's platform executor.
final class GlobalRings: TaskExecutor, Sendable {
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
                    return Unmanaged<GlobalRings>.fromOpaque(context).takeUnretainedValue().take(unsafeBitCast(raw, to: UnownedJob.self))
                },
                { _, nanoseconds, raw in
                    guard let raw else { return false }
                    DelayedJobs.add(.global(unsafeBitCast(raw, to: UnownedJob.self)), after: nanoseconds, on: RingExecutor.current?.worker)
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
            _createExecutors(factory: Factory.self)
        }
    }

    /// What `_createExecutors` installs: the platform's main executor, and the rings.
    private enum Factory: ExecutorFactory {
        static var mainExecutor: any MainExecutor { PlatformExecutorFactory.mainExecutor }
        static var defaultExecutor: any TaskExecutor { GlobalRings.installed.load() ?? PlatformExecutorFactory.defaultExecutor }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if !take(job) { Self.runElsewhere(job) }
    }

    /// Takes a job of the global executor; false when every ring has stopped.
    private func take(_ job: UnownedJob) -> Bool {
        if let worker = RingExecutor.current?.worker, worker.servesGlobalJobs.load(ordering: .relaxed), worker.enqueue(.global(job)) {
            return true
        }
        let workers = runtime.workers
        let first = next.wrappingAdd(1, ordering: .relaxed).oldValue
        for step in 0..<workers.count where workers[(first &+ step) % workers.count].post(.job(.global(job))) {
            return true
        }
        return false
    }

    /// A global job once every ring has stopped: Swift's platform executor runs it.
    static func runElsewhere(_ job: UnownedJob) {
        if let rings = installed.load(), rings.take(job) { return }
        PlatformExecutorFactory.defaultExecutor.enqueue(ExecutorJob(job))
    }
}
