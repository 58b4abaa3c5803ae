/// Process limits on memory DirectIO pins.
package enum MemoryLimits {
    /// RLIMIT_MEMLOCK's soft limit in bytes, or nil when unlimited. mlock'ed pool memory and
    /// io_uring registered buffers are each charged against it (unless the process has
    /// CAP_IPC_LOCK), and on recent kernels (6.18 here) so is each ring's own memory and the
    /// pages a zero-copy send pins. `Preflight` compares it with what a runtime needs.
    package static var memlockLimitBytes: UInt64? { Sys.memlockLimit() }

    /// Whether pinning memory is charged to no limit here: CAP_IPC_LOCK, or RLIMIT_MEMLOCK
    /// unlimited (read once). Bounce reserves are locked and registered only then; elsewhere
    /// the limit is left to the rings and the application's own pools (a reserve registered
    /// with every ring would be charged once per ring).
    package static let pinningIsFree: Bool = Sys.memlockLimit() == nil || Preflight.hasCapability(14, files: .live) == true  // CAP_IPC_LOCK
}
