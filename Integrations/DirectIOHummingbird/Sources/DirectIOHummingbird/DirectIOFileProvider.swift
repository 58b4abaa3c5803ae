import DirectIO
import Foundation
import Glibc
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// A Hummingbird `FileProvider` that reads files with O_DIRECT into pinned, registered pool
/// buffers on a DirectIO runtime: no page cache filled with every file served, no thread pool.
/// `FileMiddleware` does the HTTP part (ranges, ETags, If-None-Match):
///
///     let provider = try await DirectIOFileProvider(rootFolder: "public")
///     router.add(middleware: FileMiddleware(fileProvider: provider))
///
/// Each response reads the file in `chunkBytes` pieces at block-aligned offsets (DMA straight
/// into a pool buffer; a range at any offset is cut from them), up to `readAhead` at once ahead
/// of the one being written to the socket, so the disk does not wait for the client (O_DIRECT
/// has no kernel read-ahead). Each piece's pool buffer is lent to NIO as the `ByteBuffer` it
/// writes, and comes back to the pool when NIO frees it: no copy between the disk and the socket.
///
/// Files whose filesystem refuses O_DIRECT (tmpfs, ramfs) are served through the page cache,
/// logged at info the first time. Paths are checked here, not only by the middleware: a NUL
/// byte, `..` (also percent-encoded), an over-long path or a symlink that leads out of the root
/// is refused (404), and the attempt is logged at info.
public struct DirectIOFileProvider: FileProvider {
    public struct FileAttributes: Sendable, FileMiddlewareFileAttributes {
        public let isFolder: Bool
        public let size: Int
        public let modificationDate: Date
    }

    /// A file under the root, every symlink resolved, which file it was when resolved (device
    /// and inode: what is opened later must be that file), and its attributes then.
    public struct FileIdentifier: Sendable, Hashable {
        public let path: String
        let device: UInt64
        let inode: UInt64
        let isFolder: Bool
        let size: Int
        let modified: timespec

        init(path: String, _ info: stat) {
            self.path = path
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
            isFolder = info.st_mode & S_IFMT == S_IFDIR
            size = Int(info.st_size)
            modified = info.st_mtim
        }

        public static func == (a: FileIdentifier, b: FileIdentifier) -> Bool {
            a.path == b.path && a.device == b.device && a.inode == b.inode && a.size == b.size
                && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(path)
            hasher.combine(inode)
        }
    }

    /// The served root: resolved, ending in "/".
    public let root: String
    public let runtime: IORuntime
    public let chunkBytes: Int
    public let readAhead: Int
    /// Buffers of one chunk, shared by every response (see `ChunkStream` for who waits when).
    let pool: BufferPool
    let logger: Logger
    /// Whether a fallback to the page cache has been logged at info (later ones at debug).
    private let fallbackLogged = Flag()

    private final class Flag: Sendable {
        let raised = Atomic<Bool>(false)
    }

    /// - Parameters:
    ///   - rootFolder: the folder whose files are served.
    ///   - runtime: the runtime the reads run on (default: `IORuntime.shared()`).
    ///   - chunkBytes: the size of each read.
    ///   - readAhead: reads in flight or waiting for the socket per response.
    ///   - buffers: how many responses may stream with their full read-ahead at once: the pool
    ///     has `buffers × readAhead` chunk buffers. Beyond that, responses read less ahead, and
    ///     a response with nothing in flight waits for a buffer (NIO returns them as it sends).
    public init(rootFolder: String, runtime: IORuntime? = nil, chunkBytes: Int = 256 << 10, readAhead: Int = 8, buffers: Int = 16,
                logger: Logger = Logger(label: "DirectIOFileProvider")) async throws {
        guard let root = ServedPath.realPath(rootFolder) else {
            throw DirectIOError(.notFound, operation: "serve files", path: rootFolder, detail: "the root folder does not exist")
        }
        let runtime = if let runtime { runtime } else { try IORuntime.shared() }
        self.root = root.hasSuffix("/") ? root : root + "/"
        self.runtime = runtime
        self.chunkBytes = chunkBytes
        self.readAhead = max(readAhead, 1)
        self.pool = try BufferPool(count: max(buffers, 1) * self.readAhead, bufferBytes: chunkBytes)
        self.logger = logger
        await runtime.register(pool)
        logger.info("serving files with O_DIRECT", metadata: ["directio.root": "\(self.root)", "directio.chunk_bytes": "\(chunkBytes)"])
    }

    public func getFileIdentifier(_ path: String) -> FileIdentifier? {
        switch ServedPath.resolve(path, under: root) {
        case .file(let resolved):
            var info = stat()
            guard stat(resolved, &info) == 0 else { return nil }
            return FileIdentifier(path: resolved, info)
        case .missing:
            return nil
        case .refused(let reason):
            logger.info("refused a request path", metadata: ["directio.request_path": "\(path.prefix(512))", "directio.reason": "\(reason)"])
            return nil
        }
    }

    /// The attributes `id` was resolved with, a moment before (FileMiddleware asks right after
    /// `getFileIdentifier`): no second `stat`.
    public func getAttributes(id: FileIdentifier) async throws -> FileAttributes? {
        let modified = Double(id.modified.tv_sec) + Double(id.modified.tv_nsec) / 1e9
        return FileAttributes(isFolder: id.isFolder, size: id.size, modificationDate: Date(timeIntervalSince1970: modified))
    }

    public func loadFile(id: FileIdentifier, context: some RequestContext) async throws -> ResponseBody {
        try await load(id, range: nil)
    }

    public func loadFile(id: FileIdentifier, range: ClosedRange<Int>, context: some RequestContext) async throws -> ResponseBody {
        try await load(id, range: range)
    }

    /// Opens `id` and streams `range` of it (nil: all of it), cut to its size.
    private func load(_ id: FileIdentifier, range: ClosedRange<Int>?) async throws -> ResponseBody {
        if id.isFolder { throw HTTPError(.notFound) }
        let file = try AsyncFile(path: id.path, options: OpenOptions(access: .readOnly, directIO: .preferred), runtime: runtime)
        // The path was checked when resolved; a component swapped for a symlink since would
        // make the open follow it out of the root. The file opened must be the one checked.
        var opened = stat()
        guard fstat(file.descriptor, &opened) == 0, UInt64(opened.st_dev) == id.device, UInt64(opened.st_ino) == id.inode else {
            logger.info("refused a file that changed after its path was checked", metadata: ["directio.path": "\(id.path)"])
            throw HTTPError(.notFound)
        }
        // The size FileMiddleware built its headers from: a file that has shrunk since ends the
        // response with an error (`ChunkStream`); one that has grown is served to that size.
        guard id.size > 0 else {
            if range == nil { return ResponseBody() }
            throw HTTPError(.notFound)
        }
        // FileMiddleware passes open-ended ranges ("bytes=1000-") up to Int.max: cut to the file.
        let range = (range ?? 0...(id.size - 1)).clamped(to: 0...(id.size - 1))
        if let note = file.fallbackNote {
            let first = !fallbackLogged.raised.exchange(true, ordering: .relaxed)
            logger.log(level: first ? .info : .debug, "serving through the page cache: O_DIRECT refused",
                       metadata: ["directio.path": "\(id.path)", "directio.reason": "\(note)"])
        }
        let stream = ChunkStream(file: file, pool: pool, readAhead: readAhead, range: range)
        return ResponseBody(contentLength: range.count) { writer in
            try await stream.write(to: &writer)
        }
    }
}
