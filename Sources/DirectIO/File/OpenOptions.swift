import Glibc

/// Whether a `DirectFile` bypasses the page cache.
public enum DirectIOMode: Sendable, Equatable {
    /// O_DIRECT or fail: opening fails with `.directIOUnsupported`, naming the filesystem,
    /// when the filesystem refuses it.
    case required
    /// O_DIRECT where it works, else buffered I/O; `DirectFile.fallbackNote` says why.
    case preferred
    /// Buffered I/O through the page cache.
    case disabled
}

/// How to open a `DirectFile`.
public struct OpenOptions: Sendable {
    public enum Access: Sendable { case readOnly, writeOnly, readWrite }

    public var access: Access
    public var directIO: DirectIOMode
    /// Create the file if it does not exist.
    public var create: Bool
    /// Fail if the file exists (with `create`).
    public var exclusive: Bool
    /// Cut the file to zero length.
    public var truncate: Bool
    /// Permission bits for a created file.
    public var permissions: mode_t
    /// What caller memory, offsets and lengths that break the direct-I/O alignment get.
    public var misaligned: MisalignedPolicy
    /// Bounce buffers to use, shared with other files (and threads) if you like; nil uses the
    /// engine's own. A shared pool bounds the memory bouncing can take across all of them.
    public var bouncePool: BufferPool?
    /// When every bounce buffer is in use: wait for one to come back (never fails, like the
    /// kernel's mempool for callers that may sleep), or fail at once with `.wouldBlock`.
    public var waitForBounceBuffers: Bool

    public init(access: Access = .readWrite, directIO: DirectIOMode = .required, create: Bool = false, exclusive: Bool = false, truncate: Bool = false, permissions: mode_t = 0o644, misaligned: MisalignedPolicy = .bounce,
                bouncePool: BufferPool? = nil, waitForBounceBuffers: Bool = true) {
        self.access = access
        self.directIO = directIO
        self.create = create
        self.exclusive = exclusive
        self.truncate = truncate
        self.permissions = permissions
        self.misaligned = misaligned
        self.bouncePool = bouncePool
        self.waitForBounceBuffers = waitForBounceBuffers
    }

    var flags: Int32 {
        var flags: Int32 = O_CLOEXEC
        switch access {
        case .readOnly: flags |= O_RDONLY
        case .writeOnly: flags |= O_WRONLY
        case .readWrite: flags |= O_RDWR
        }
        if create { flags |= O_CREAT }
        if exclusive { flags |= O_EXCL }
        if truncate { flags |= O_TRUNC }
        return flags
    }
}

/// What a direct-I/O file does with requests that break its alignment.
public enum MisalignedPolicy: Sendable {
    /// Move the aligned part directly and only the rest through bounce buffers
    /// (read-modify-write for partly covered blocks). Pool and aligned buffers never need it.
    case bounce
    /// Refuse with `.misaligned`, naming the broken limit: for callers who must know that
    /// every byte moved by DMA.
    case fail
}

extension OpenOptions {
    /// What a caller can do where the filesystem refuses O_DIRECT, as errors say it (a command
    /// line says it in its own terms instead).
    package static let bufferedRemedy = "open with .preferred to fall back to buffered I/O"
}
