import Logging
import CDirectIO
import Glibc
import Synchronization
import SystemPackage

/// One ring and the thread that drives it. Other threads post requests, cancellations and
/// executor jobs to its inbox; the thread submits them, waits in io_uring_enter for
/// completions or a wake-up, resumes the waiting tasks and runs the jobs of tasks that
/// prefer this ring's executor. Those tasks submit straight to the ring, with no handoff.
///
/// A READ on an eventfd is always in the ring, so a thread posting to a sleeping worker wakes
/// it with one write(2): the worker sleeps only in io_uring_enter, where completions and
/// posts both find it. (Without io_uring the worker runs the blocking engine and sleeps on
/// the inbox's condition instead.)
///
/// Ownership: the runtime holds each ring's `RingExecutor`, which holds its worker; the
/// worker holds nothing back (no cycle, and no weak reference: a weak reference gives the
/// worker a side table that makes every retain and release of it take the slow path). The
/// thread keeps its executor and worker alive until it exits.
///
/// Unchecked sendability: the inbox is a `ConditionLock`, `thread` and `wakesByEventFD` are
/// atomics, and everything else mutable (`local`, `wakeBuffer`) belongs to the worker thread
/// alone: other threads reach `local` only through `enqueue`, which touches it only when the
/// caller is the worker's thread, and `deinit` runs after the thread has exited (the thread
/// holds the worker until then).
final class RingWorker: @unchecked Sendable {
    enum Message: Sendable {
        case request(AsyncRequest)
        case cancel(AsyncRequest)
        /// A scope's task was cancelled: cancel its requests in the kernel (those still waiting
        /// see the scope's flag when their turn comes).
        case cancelScope(IOScopeState)
        case job(ReadyJob)
        /// Register a pool with the ring (sharing the pages pinned at `SharedFixedBuffers.Pinned`
        /// when given), then call the closure, if any.
        case register(BufferPool, SharedFixedBuffers.Pinned?, (@Sendable () -> Void)?)
        /// A file is gone: drop its descriptor from the fixed-file table, then tell `release`.
        case forget(DescriptorRelease)
        /// Hand the engine's counters to the closure (read on the worker's thread, which owns them).
        case statistics(@Sendable (EngineStatistics) -> Void)
        /// Finish (or cancel) what is in flight, then exit; resumes the continuation, if any, once done.
        case stop(cancelInFlight: Bool, UnsafeContinuation<Void, Never>?)
    }

    private struct Inbox: Sendable {
        var messages: [Message] = []
        /// The worker is (about to be) blocked waiting: a poster must wake it.
        var sleeping = false
        /// The thread has exited: nothing posted now would ever be read.
        var closed = false
        /// Requests and jobs handed over by other threads: each one crossed to this thread.
        var crossings = 0
    }

    let queueDepth: Int
    let engineChoice: IOEngine.Choice
    /// Wraps the engine's kernel-facing backend (DirectIOTesting's fault injection).
    let wrap: (@Sendable (any EngineBackend) -> any EngineBackend)?
    /// Given to the ring's engine, which says its limitations there.
    let logger: Logger?
    private let inbox = ConditionLock(Inbox())
    private let eventFD: Int32
    /// The worker's thread, stored by that thread before it reports ready (pthread_t is an
    /// integer on Linux): read at every post and executor enqueue, so a plain atomic load.
    private let thread = Atomic<UInt>(0)
    /// Whether the worker sleeps in io_uring_enter with a wake read armed (else on the inbox's
    /// condition): read by posters, so atomic.
    private let wakesByEventFD = Atomic<Bool>(false)

    private let wakeBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// The worker thread's own state, behind a pointer like the engine's: Swift checks every
    /// access to a class's stored `var` for exclusivity at run time (about 20 checks per I/O
    /// here); through a pointer it does not. Only the worker thread touches it.
    private let local: UnsafeMutablePointer<ThreadState>
    static let wakeTag: UInt64 = .max
    /// Completions handled per round before the tasks they resume run and resubmit. Measured
    /// at 4 KiB random reads, depth 32 and 64 (BENCHMARKS.md): one per enter costs fio's CPU per
    /// I/O; four keep the device's queue as full at about three quarters of it; 16 and more
    /// leave the queue short while a batch is handled.
    static let completionsPerRound = 4

    private struct ThreadState {
        var engine: IOEngine?
        var usesWakeRead = false
        /// Set when the engine could not reap everything at exit (a broken ring).
        var wakeReadOutstanding = false
        /// Requests waiting for room in the ring, in arrival order (those in the ring are
        /// recorded in the engine's slots alone, which resume their tasks).
        var backlog: [AsyncRequest] = []
        var backlogHead = 0
        var stopWaiters: [UnsafeContinuation<Void, Never>] = []
        var stopping = false
        var backoff = EnterBackoff()
        /// Jobs enqueued by this worker's own thread (a task resumed here, on this executor): no
        /// lock needed, and no wake-up, since the worker is awake.
        var localJobs: [ReadyJob] = []
        /// Reused message and job arrays: swapping them in and out keeps their storage, where
        /// copying an array out and emptying it would allocate new storage every round.
        var takenMessages: [Message] = []
        var runningJobs: [ReadyJob] = []
        /// The installed `GlobalRings` as a task executor, once a global job has asked for it.
        var globalExecutor: UnownedTaskExecutor?

        init() {}
    }

    private init(queueDepth: Int, engineChoice: IOEngine.Choice, logger: Logger?, wrap: (@Sendable (any EngineBackend) -> any EngineBackend)?, eventFD: Int32) {
        self.queueDepth = queueDepth
        self.engineChoice = engineChoice
        self.logger = logger
        self.wrap = wrap
        self.eventFD = eventFD
        local = .allocate(capacity: 1)
        local.initialize(to: ThreadState())
        wakeBuffer.initialize(to: 0)
    }

    deinit {
        _ = try? Sys.close(eventFD)
        // If the ring broke with the wake read still in it, the kernel may yet write these
        // 8 bytes: keep them rather than free memory under it.
        if !local.pointee.wakeReadOutstanding { wakeBuffer.deallocate() }
        local.deinitialize(count: 1)
        local.deallocate()
    }

    /// Starts a worker thread and waits until its ring exists; returns the executor that runs
    /// tasks on that thread, which owns the worker.
    static func start(queueDepth: Int, engine: IOEngine.Choice, logger: Logger? = nil, wrap: (@Sendable (any EngineBackend) -> any EngineBackend)?) throws(DirectIOError) -> RingExecutor {
        let fd: Int32
        do { fd = try Sys.eventfd() } catch { throw .system(error, operation: "start I/O runtime", call: "eventfd") }
        let worker = RingWorker(queueDepth: queueDepth, engineChoice: engine, logger: logger, wrap: wrap, eventFD: fd)
        let executor = RingExecutor(worker)
        let ready = ConditionLock<ReadyState>(.starting)
        do {
            try Sys.startDetachedThread { executor.worker.run(ready: ready, executor: executor) }
        } catch {
            throw .system(error, operation: "start I/O runtime", call: "pthread_create")
        }
        let outcome = ready.wait { state -> ReadyState? in state == .starting ? nil : state }
        if case .failed(let error) = outcome { throw error }
        return executor
    }

    private enum ReadyState: Sendable, Equatable {
        case starting, running
        case failed(DirectIOError)

        static func == (a: ReadyState, b: ReadyState) -> Bool {
            switch (a, b) {
            case (.starting, .starting), (.running, .running), (.failed, .failed): true
            default: false
            }
        }
    }

    /// Runs `job` on this worker: queued locally when the caller is the worker's own thread,
    /// posted otherwise. False when the worker has exited.
    func enqueue(_ job: ReadyJob) -> Bool {
        if isCurrent {
            local.pointee.localJobs.append(job)
            return true
        }
        return post(.job(job))
    }

    /// Set when the worker's runtime is Swift's global executor (`GlobalRings`): tasks
    /// resumed or started on its thread stay on it.
    let servesGlobalJobs = Atomic<Bool>(false)

    /// Whether the worker drives io_uring (else the blocking engine).
    var isRing: Bool { wakesByEventFD.load(ordering: .acquiring) }

    /// Asks the worker to finish its I/O and exit, without waiting (runtime deinit, or a
    /// failed start of a sibling).
    func stopDetached() {
        _ = post(.stop(cancelInFlight: false, nil))
    }

    /// Whether the calling thread is this worker's.
    var isCurrent: Bool { Sys.currentThread() == thread.load(ordering: .relaxed) }

    // MARK: Posting (any thread)

    /// How many requests and jobs other threads have handed to this worker (tests count the
    /// thread crossings of a call with it).
    package var crossings: Int { inbox.withLock { $0.crossings } }

    /// Hands `message` to the worker; false when the worker has exited.
    @discardableResult
    func post(_ message: Message) -> Bool {
        var wake = false
        var accepted = true
        inbox.updateAndBroadcast { box in
            guard !box.closed else {
                accepted = false
                return
            }
            box.messages.append(message)
            switch message {
            case .request, .job: box.crossings += 1
            default: break
            }
            if box.sleeping {
                box.sleeping = false
                wake = true
            }
        }
        if wake && wakesByEventFD.load(ordering: .acquiring) {
            var one: UInt64 = 1
            // Fails only if the counter would overflow, and then the worker is awake anyway.
            _ = try? Sys.write(eventFD, &one, 8)
        }
        return accepted
    }

    /// Starts `request` from a task, which `continuation` resumes with the final outcome:
    /// straight into the ring on the worker's own thread, through the inbox from any other. A
    /// worker that has exited refuses it at once.
    func submit(_ request: AsyncRequest, resuming continuation: UnsafeContinuation<IOOutcome, Never>) {
        request.continuation = continuation
        if isCurrent {
            accept(request)
        } else if !post(.request(request)) {
            request.refusedByShutdown = true
            request.finish(IOOutcome(bytes: 0, errno: .canceled))
        }
    }

    /// Starts two requests together, resuming `continuation` once both have their final
    /// completion (each request then holds its `outcome`).
    func submit(_ first: AsyncRequest, _ second: AsyncRequest, resuming continuation: UnsafeContinuation<Void, Never>) {
        let group = RequestGroup(count: 2, resuming: continuation)
        for request in [first, second] {
            request.group = group
            if isCurrent {
                accept(request)
            } else if !post(.request(request)) {
                request.refusedByShutdown = true
                request.finish(IOOutcome(bytes: 0, errno: .canceled))
            }
        }
    }

    // MARK: The worker thread

    private func run(ready: ConditionLock<ReadyState>, executor: RingExecutor) {
        thread.store(Sys.currentThread(), ordering: .relaxed)
        dio_set_current_ring_executor(Unmanaged.passUnretained(executor).toOpaque())
        let engine: IOEngine
        do {
            // One more slot than requests: the eventfd read that wakes the worker.
            // The runtime's own bounce reserve serves async requests: one buffer here, unused.
            engine = try IOEngine(engineChoice, queueDepth: queueDepth + 1, ringFlags: .threadPerCore, fixedBufferSlots: 4096, fixedFileSlots: 1024, bounceBuffers: 1, smallBounceBuffers: false,
                                  logger: logger, wrappingBackend: wrap)
        } catch {
            dio_set_current_ring_executor(nil)
            thread.store(0, ordering: .relaxed)
            ready.updateAndBroadcast { $0 = .failed(error) }
            return
        }
        local.pointee.engine = engine
        // This thread alone enters the ring, and drops the engine in `exit`.
        _ = engine.registerRingDescriptor()
        local.pointee.usesWakeRead = engine.kind == .ioUring
        if local.pointee.usesWakeRead { armWakeRead(engine) }
        ready.updateAndBroadcast { $0 = .running }

        let taskExecutor = executor.asUnownedTaskExecutor()
        while true {
            inbox.withLock { box in
                swap(&box.messages, &local.pointee.takenMessages)
                box.sleeping = false
            }
            for message in local.pointee.takenMessages {
                switch message {
                case .request(let request): accept(request)
                case .cancel(let request): cancel(request)
                case .cancelScope(let scope): cancel(scope)
                case .job(let job): local.pointee.localJobs.append(job)
                case .register(let pool, let shared, let done):
                    _ = engine.registering(pool, shared: shared)
                    done?()
                case .forget(let release):
                    engine.forgetFile(release.fd)
                    release.done()
                case .statistics(let report):
                    report(engine.statistics)
                case .stop(let cancelInFlight, let done):
                    local.pointee.stopping = true
                    if let done { local.pointee.stopWaiters.append(done) }
                    if cancelInFlight {
                        // Waiting requests never reached the kernel: refuse them now. Those in
                        // the kernel are cancelled there and finish when their completions come.
                        for index in local.pointee.backlogHead..<local.pointee.backlog.count {
                            local.pointee.backlog[index].refusedByShutdown = true
                            local.pointee.backlog[index].finish(IOOutcome(bytes: 0, errno: .canceled))
                        }
                        local.pointee.backlog.removeAll()
                        local.pointee.backlogHead = 0
                        engine.cancelWaiters { request in
                            request.cancelledByShutdown = true
                            return true
                        }
                    }
                }
            }
            local.pointee.takenMessages.removeAll(keepingCapacity: true)
            submitBacklog()
            // Posted jobs and tasks resumed on this thread run now, one round of them: jobs they
            // enqueue in turn (a task that yields, a child task) wait until the worker has looked
            // for completions again, so a task that keeps yielding cannot starve the ring's I/O.
            if !local.pointee.localJobs.isEmpty {
                swap(&local.pointee.localJobs, &local.pointee.runningJobs)
                // A task that prefers this ring runs on its executor. A global job (the rings are
                // Swift's global executor) runs on `GlobalRings`, which is then also Swift's
                // default executor: a task without a preference sees the executor it expects
                // (no hop back to it at every resumption), and what the standard library
                // enqueues on `Task.currentExecutor` (`Task.yield`, `Task.sleep`) stays here.
                for job in local.pointee.runningJobs {
                    switch job {
                    case .preferring(let job): job.runSynchronously(on: taskExecutor)
                    case .global(let job):
                        if local.pointee.globalExecutor == nil { local.pointee.globalExecutor = GlobalRings.installed.load()?.asUnownedTaskExecutor() }
                        if let global = local.pointee.globalExecutor { job.runSynchronously(on: global) } else { job.runSynchronously(on: taskExecutor) }
                    }
                }
                local.pointee.runningJobs.removeAll(keepingCapacity: true)
            }
            // Every message taken has been handled (jobs included): once stopping, leave as soon
            // as nothing is in the kernel, waiting for it, or ready to run. Later posts are
            // handled in `exit`.
            if local.pointee.stopping && engine.waitersInFlight == 0 && local.pointee.backlogHead == local.pointee.backlog.count
                && local.pointee.localJobs.isEmpty {
                break
            }
            // Sleep only when nothing is ready to run and nothing was posted meanwhile: a post
            // that saw `sleeping` wakes us.
            let block = local.pointee.localJobs.isEmpty && inbox.withLock { box -> Bool in
                guard box.messages.isEmpty else { return false }
                box.sleeping = true
                return true
            }
            if !local.pointee.usesWakeRead && block && engine.waitersInFlight == 0 && !local.pointee.stopping {
                // The blocking engine has nothing in flight to wait for: wait for a post.
                _ = inbox.wait { box -> Bool? in box.messages.isEmpty && box.sleeping ? nil : true }
                continue
            }
            do {
                // A few completions per round, like the batched API's submit-as-you-reap: the
                // tasks they resume run (and submit their next request) before more are reaped,
                // so the device's queue refills one request at a time instead of a batch later.
                // Completions resume their tasks inside `service`; the wake read comes back here.
                try engine.service(block: block, limit: Self.completionsPerRound) { completion in complete(completion) }
                // Slots are free again: the next waiting requests may go.
                submitBacklog()
                local.pointee.backoff.reset()
            } catch {
                // The ring policy (`EnterBackoff`): the kernel may still own the memory of every
                // request in flight, so none finishes before its completion arrives; pause and
                // try again (new requests meanwhile fail at `engine.submit` with this errno).
                local.pointee.backoff.pauseAfterFailure()
            }
        }
        exit(engine)
    }

    private func armWakeRead(_ engine: IOEngine) {
        // Offset -1: "the file position", what non-seekable files like eventfd need.
        let operation = IOOperation.read(fd: eventFD, into: UnsafeMutableRawPointer(wakeBuffer), count: 8, at: -1, fixedSlot: nil)
        do {
            try engine.submit(operation, tag: Self.wakeTag, buffer: nil, blockBytes: 1)
            wakesByEventFD.store(true, ordering: .releasing)
        } catch {
            // Without the wake read a sleeping worker would miss posts: sleep on the inbox.
            local.pointee.usesWakeRead = false
            wakesByEventFD.store(false, ordering: .releasing)
        }
    }

    /// A request arriving at the worker: refused after shutdown, finished at once if already
    /// cancelled, else started or queued behind the others (backpressure: callers wait in order).
    private func accept(_ request: AsyncRequest) {
        if local.pointee.stopping {
            request.refusedByShutdown = true
            request.finish(IOOutcome(bytes: 0, errno: .canceled))
            return
        }
        if request.isCancelled {
            request.finish(IOOutcome(bytes: 0, errno: .canceled))
            return
        }
        if local.pointee.backlogHead < local.pointee.backlog.count || !hasRoom {
            local.pointee.backlog.append(request)
            return
        }
        start(request)
    }

    /// Whether the ring has room for another request: `queueDepth` of them, the engine's last
    /// slot being the wake read's.
    private var hasRoom: Bool {
        guard let engine = local.pointee.engine else { return false }
        return engine.waitersInFlight < queueDepth && engine.hasFreeSlot
    }

    /// Sends `request` to the kernel; there is room (the callers check). The engine's slot is
    /// the request's one record from here to its completion.
    private func start(_ request: AsyncRequest) {
        guard let engine = local.pointee.engine else { return }
        // A file gets a fixed-file slot from its second request on (`AsyncRequest.mayRegisterFile`):
        // a file read once (a server's small files) costs no registration and closes at once.
        let operation = request.operation(on: engine, fileSlot: engine.fileSlot(for: request.fd, registering: request.mayRegisterFile))
        do { request.tag = try engine.submit(operation, resuming: request, blockBytes: request.blockBytes) } catch {
            request.finish(IOOutcome(bytes: 0, errno: error.errno ?? .ioError))
        }
    }

    private func submitBacklog() {
        while local.pointee.backlogHead < local.pointee.backlog.count && hasRoom {
            let request = local.pointee.backlog[local.pointee.backlogHead]
            local.pointee.backlogHead += 1
            if request.isCancelled {
                request.finish(IOOutcome(bytes: 0, errno: .canceled))
            } else {
                start(request)
            }
        }
        if local.pointee.backlogHead == local.pointee.backlog.count {
            local.pointee.backlog.removeAll(keepingCapacity: true)
            local.pointee.backlogHead = 0
        } else if local.pointee.backlogHead > 4096 {
            local.pointee.backlog.removeFirst(local.pointee.backlogHead)
            local.pointee.backlogHead = 0
        }
    }

    private func cancel(_ request: AsyncRequest) {
        // Still in the backlog: its flag is seen when its turn comes. Already finished: its
        // slot's user data has moved on, and nothing happens.
        guard request.tag != 0, let engine = local.pointee.engine else { return }
        engine.cancel(userData: request.tag)
    }

    private func cancel(_ scope: IOScopeState) {
        local.pointee.engine?.cancelWaiters { $0.scope === scope }
    }

    private func complete(_ completion: consuming IOCompletion) {
        if completion.tag == Self.wakeTag {
            if let engine = local.pointee.engine, local.pointee.usesWakeRead, !(local.pointee.stopping && engine.waitersInFlight == 0) { armWakeRead(engine) }
        }
    }

    /// Leaves the loop: closes the inbox (later posts are refused), wakes the stop waiters.
    private func exit(_ engine: IOEngine) {
        let late = inbox.withLock { box -> [Message] in
            box.closed = true
            let taken = box.messages
            box.messages.removeAll()
            return taken
        }
        // From here this thread is no ring's: tasks resumed below go to other threads.
        thread.store(0, ordering: .relaxed)
        dio_set_current_ring_executor(nil)
        // Posts that raced with the exit: refuse requests, run jobs elsewhere.
        for message in late {
            switch message {
            case .request(let request):
                request.refusedByShutdown = true
                request.finish(IOOutcome(bytes: 0, errno: .canceled))
            case .job(let job): job.runElsewhere()
            case .register(_, _, let done): done?()
            case .forget(let release): release.done()
            case .statistics(let report): report(engine.statistics)
            case .stop(_, let done): done?.resume()
            case .cancel, .cancelScope: break
            }
        }
        // The wake read is the only request left: cancel it and wait for its completion, so the
        // kernel is done with `wakeBuffer` before this object can go away.
        engine.shutdown()
        local.pointee.wakeReadOutstanding = engine.inFlight > 0
        local.pointee.engine = nil
        for waiter in local.pointee.stopWaiters { waiter.resume() }
        local.pointee.stopWaiters.removeAll()
        for job in local.pointee.localJobs { job.runElsewhere() }
        local.pointee.localJobs.removeAll()
    }
}

/// A job a ring runs: one of a task that prefers the ring's executor, or one of Swift's global
/// executor's when the rings are that executor (`GlobalRings`).
enum ReadyJob: Sendable {
    case preferring(UnownedJob)
    case global(UnownedJob)

    /// After its worker has exited, the job still needs somewhere to run: the global executor
    /// (the other rings while they run, else Swift's default executor).
    func runElsewhere() {
        switch self {
        case .preferring(let job): globalConcurrentExecutor.enqueue(job)
        case .global(let job): GlobalRings.runElsewhere(job)
        }
    }
}

