import SystemPackage

/// The one error type DirectIO throws.
///
/// It says what failed (`code`), what DirectIO was doing (`operation`), where (`path`,
/// `offset`, `length`), and what the kernel said (`systemCall`, `errno`). `detail` explains
/// the cause in words when DirectIO knows more than the errno does, e.g. which alignment limit
/// an `EINVAL` under O_DIRECT broke.
public struct DirectIOError: Error, Sendable, CustomStringConvertible {
    /// An extensible error category: compare with the static members, print for a name.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        public static let invalidArgument = Code("invalid argument")
        /// Memory address, file offset or length breaks the device's direct-I/O alignment.
        public static let misaligned = Code("misaligned for direct I/O")
        /// The filesystem refuses O_DIRECT and the caller required it.
        public static let directIOUnsupported = Code("direct I/O unsupported")
        public static let notFound = Code("not found")
        public static let alreadyExists = Code("already exists")
        public static let permissionDenied = Code("permission denied")
        public static let noSpace = Code("no space left on device")
        public static let ioError = Code("I/O error")
        public static let badDescriptor = Code("bad file descriptor")
        public static let isDirectory = Code("is a directory")
        public static let notDirectory = Code("not a directory")
        public static let readOnlyFilesystem = Code("read-only filesystem")
        public static let fileTooLarge = Code("file too large")
        public static let cancelled = Code("cancelled")
        public static let wouldBlock = Code("would block")
        public static let outOfMemory = Code("out of memory")
        public static let unsupported = Code("unsupported")
        public static let badAddress = Code("bad address")
        public static let noDevice = Code("no such device")
        public static let tooManyOpenFiles = Code("too many open files")
        public static let invalidPath = Code("invalid path")
        public static let busy = Code("busy")
        public static let unexpected = Code("unexpected error")

        /// The category of an errno, each mapped on purpose; an errno DirectIO does not expect
        /// is `.unexpected`, and the error still carries the errno itself.
        public init(errno: Errno) {
            switch errno {
            case .invalidArgument: self = .invalidArgument
            case .noSuchFileOrDirectory: self = .notFound
            case .fileExists: self = .alreadyExists
            case .permissionDenied, .notPermitted: self = .permissionDenied
            case .noSpace, .diskQuotaExceeded: self = .noSpace
            case .ioError: self = .ioError
            case .badFileDescriptor: self = .badDescriptor
            case .isDirectory: self = .isDirectory
            case .notDirectory: self = .notDirectory
            case .readOnlyFileSystem: self = .readOnlyFilesystem
            case .fileTooLarge: self = .fileTooLarge
            case .canceled: self = .cancelled
            case .resourceTemporarilyUnavailable: self = .wouldBlock
            case .noMemory: self = .outOfMemory
            case .notSupported, .notSupportedOnSocket, .noFunction: self = .unsupported
            case .badAddress: self = .badAddress
            case .noSuchAddressOrDevice, .operationNotSupportedByDevice: self = .noDevice
            case .tooManyOpenFiles, .tooManyOpenFilesInSystem: self = .tooManyOpenFiles
            case .tooManySymbolicLinkLevels, .fileNameTooLong: self = .invalidPath
            case .resourceBusy, .textFileBusy: self = .busy
            default: self = .unexpected
            }
        }
    }

    public var code: Code
    /// What DirectIO was doing, e.g. "read", "open", "register buffers".
    public var operation: String
    public var path: String?
    public var offset: Int64?
    public var length: Int?
    /// The system call that failed, e.g. "pread", "io_uring_enter", "READ_FIXED".
    public var systemCall: String?
    public var errno: Errno?
    /// The cause in words, when DirectIO knows more than the errno says.
    public var detail: String?
    public var file: String
    public var line: Int

    public init(
        _ code: Code, operation: String, path: String? = nil, offset: Int64? = nil, length: Int? = nil,
        systemCall: String? = nil, errno: Errno? = nil, detail: String? = nil,
        file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.operation = operation
        self.path = path
        self.offset = offset
        self.length = length
        self.systemCall = systemCall
        self.errno = errno
        self.detail = detail
        self.file = file
        self.line = line
    }

    /// An error for a failed system call, categorised by its errno.
    public static func system(
        _ errno: Errno, operation: String, call: String, path: String? = nil, offset: Int64? = nil,
        length: Int? = nil, detail: String? = nil, file: String = #fileID, line: Int = #line
    ) -> DirectIOError {
        DirectIOError(
            Code(errno: errno), operation: operation, path: path, offset: offset, length: length,
            systemCall: call, errno: errno, detail: detail, file: file, line: line)
    }

    public var description: String {
        var text = "\(operation) failed: \(code)"
        if let path { text += " (\(path)" + (offset.map { " at offset \($0)" } ?? "") + ")" }
        else if let offset { text += " (at offset \(offset))" }
        if let length { text += ", length \(length)" }
        if let detail { text += ": \(detail)" }
        if let systemCall, let errno { text += " [\(systemCall): \(errno) (errno \(errno.rawValue))]" }
        else if let systemCall { text += " [\(systemCall)]" }
        return text
    }
}
