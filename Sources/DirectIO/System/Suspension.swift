import CDirectIO

/// Suspends the calling task until the continuation handed to `submit` is resumed, and returns
/// what it was resumed with. Every task in DirectIO that waits for another thread (a ring's
/// completion, a returned buffer, a released block lock) waits here.
///
/// It is `withUnsafeContinuation` plus the happens-before edge the Swift runtime leaves out
/// for ThreadSanitizer when the resume comes before the task has finished suspending (see
/// `dio_tsan_acquire`): without it, sanitized runs report false races between the resuming
/// thread and the task's next suspension. The continuation's value is the task's address,
/// which is where the runtime releases.
@inline(__always)
nonisolated(nonsending) package func suspend<T>(until submit: (UnsafeContinuation<T, Never>) -> Void) async -> T {
    var task: UnsafeRawPointer?
    let value = await withUnsafeContinuation { (continuation: UnsafeContinuation<T, Never>) in
        task = unsafeBitCast(continuation, to: UnsafeRawPointer.self)
        submit(continuation)
    }
    if let task { dio_tsan_acquire(task) }
    return value
}
