import CDirectIO
import Glibc
import SystemPackage

/// Threads, for the runtime's ring workers: started and identified here, like every other
/// call into libc.
extension Sys {
    /// The calling thread's identity (pthread_self: thread-local storage, no system call).
    @inline(__always) static func currentThread() -> UInt { UInt(pthread_self()) }

    /// Whether the calling thread is the process's first (the one `main` runs on).
    static var isMainThread: Bool { dio_is_main_thread() }

    /// Starts a detached thread that runs `body` once.
    static func startDetachedThread(_ body: @escaping @Sendable () -> Void) throws(Errno) {
        let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<ThreadBody>.fromOpaque(raw).takeRetainedValue().body()
            return nil
        }, context)
        guard created == 0 else {
            Unmanaged<ThreadBody>.fromOpaque(context).release()
            throw Errno(rawValue: created)
        }
        pthread_detach(thread)
    }

    private final class ThreadBody {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
}
