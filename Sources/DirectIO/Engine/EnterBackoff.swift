/// The one policy for a ring that cannot be entered (io_uring_enter failing after its own
/// retries of EINTR, EAGAIN and EBUSY), the same for synchronous calls, batched reaps, the
/// async runtime's workers and shutdown:
///
/// - Memory lent to a request the kernel may still hold is never handed back early. Whoever
///   waits for such a request (a synchronous call, a task through its ring's worker) keeps
///   waiting, asking the kernel to cancel it, and tries the ring again after a pause that
///   doubles from 1 ms to 100 ms: no spinning, and a ring that recovers (ENOMEM passing, say)
///   carries on where it was.
/// - While the ring cannot be entered, new requests are refused before they reach it, with
///   the failing call's errno (`IOEngine.start`), and a batched `reap` throws it.
/// - An engine shut down or dropped with requests still in a ring that stays unusable for
///   `shutdownPatience` keeps their buffers forever (nobody is waiting to be told), counted in
///   `EngineStatistics.buffersKept`, rather than free memory the kernel might still write.
struct EnterBackoff {
    static let firstPause: UInt64 = 1_000_000
    static let longestPause: UInt64 = 100_000_000
    static let shutdownPatience: UInt64 = 2_000_000_000

    private var pause = firstPause
    /// Time spent pausing since the last successful enter.
    private(set) var waited: UInt64 = 0

    /// Sleeps before the next try, longer each time.
    mutating func pauseAfterFailure() {
        Sys.sleep(nanoseconds: pause)
        waited += pause
        pause = min(pause * 2, Self.longestPause)
    }

    mutating func reset() {
        pause = Self.firstPause
        waited = 0
    }
}
