/// Time and CPU accounting for measurements (benchmarks, progress reports).
public enum ProcessClock {
    /// Monotonic time in nanoseconds.
    @inline(__always)
    public static func nanoseconds() -> UInt64 { Sys.monotonicNanoseconds() }

    /// User and system CPU seconds used by the process so far (all threads).
    public static func cpuSeconds() -> (user: Double, system: Double) { Sys.cpuSeconds() }
}
