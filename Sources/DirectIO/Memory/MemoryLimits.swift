/// Process limits on memory DirectIO pins.
public enum MemoryLimits {
    /// RLIMIT_MEMLOCK's soft limit in bytes, or nil when unlimited. mlock'ed pool memory and
    /// io_uring registered buffers are each charged against it (unless the process has
    /// CAP_IPC_LOCK); the ring itself needs none since Linux 5.12.
    public static var memlockLimitBytes: UInt64? { Sys.memlockLimit() }
}
