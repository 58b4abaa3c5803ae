/// Time and CPU accounting for measurements (benchmarks, progress reports).
package enum ProcessClock {
    /// Monotonic time in nanoseconds.
    @inline(__always)
    package static func nanoseconds() -> UInt64 { Sys.monotonicNanoseconds() }

    /// User and system CPU seconds used by the process so far (all threads).
    package static func cpuSeconds() -> (user: Double, system: Double) { Sys.cpuSeconds() }
}
