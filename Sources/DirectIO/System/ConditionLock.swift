import Glibc

/// State guarded by a mutex, with a condition to wait on until the state changes: what
/// `Synchronization.Mutex` lacks, for pools whose callers may wait for a returned buffer.
/// DirectIO's shared tables use it rather than `Mutex` too: on Linux, Swift 6.3's `Mutex`
/// is futex code ThreadSanitizer cannot see, so TSan reports the state it guards as raced
/// (seen on `DeviceCache`); a pthread mutex is understood.
///
/// Unchecked sendability is sound: `state` is read and written only inside `withLock`,
/// `updateAndBroadcast` and `wait`, that is, between pthread_mutex_lock and
/// pthread_mutex_unlock on `mutex`; the pthread objects are made for use from any thread and
/// live at fixed addresses for the object's whole life.
package final class ConditionLock<State: Sendable>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    /// Behind a pointer, not a stored `var`: the mutex already makes access exclusive, and
    /// Swift would otherwise check every access again at run time.
    private let state: UnsafeMutablePointer<State>

    package init(_ state: State) {
        self.state = .allocate(capacity: 1)
        self.state.initialize(to: state)
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        // Timed waits measure on the monotonic clock, which a change of the wall clock cannot move.
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
        state.deinitialize(count: 1)
        state.deallocate()
    }

    package func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state.pointee)
    }

    /// Changes the state and wakes every waiter to look at it again.
    package func updateAndBroadcast<R>(_ body: (inout State) -> R) -> R {
        pthread_mutex_lock(mutex)
        let result = body(&state.pointee)
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
        return result
    }

    /// Waits until `attempt` returns a value, calling it with the lock held each time the
    /// state changes.
    package func wait<R>(for attempt: (inout State) -> R?) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while true {
            if let result = attempt(&state.pointee) { return result }
            pthread_cond_wait(condition, mutex)
        }
    }

    /// Like `wait(for:)`, but `attempt` also says until when to sleep (monotonic nanoseconds,
    /// `Sys.monotonicNanoseconds`) before it is asked again if nothing changes; nil: until a change.
    package func wait<R>(timing attempt: (inout State) -> (result: R?, wakeAt: UInt64?)) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while true {
            let (result, wakeAt) = attempt(&state.pointee)
            if let result { return result }
            guard let wakeAt else {
                pthread_cond_wait(condition, mutex)
                continue
            }
            var deadline = timespec(tv_sec: Int(wakeAt / 1_000_000_000), tv_nsec: Int(wakeAt % 1_000_000_000))
            pthread_cond_timedwait(condition, mutex, &deadline)
        }
    }
}
