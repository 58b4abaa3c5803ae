import DirectIO
import Foundation
import Glibc
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOEmbedded
import Synchronization
import Testing
@testable import DirectIOHummingbird

/// The provider behind Hummingbird's FileMiddleware, through a real HTTP client against a live
/// server: bytes compared with the files, ranges at unaligned offsets, fallbacks, refusals.
@Suite(.serialized) struct FileProviderTests {
    /// A folder with files on `base`'s filesystem, and a secret file beside it (outside).
    final class Tree {
        let folder: String
        let root: String
        let secret: [UInt8]

        init(base: String) throws {
            folder = base + "/directio-hb-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            root = folder + "/root"
            try FileManager.default.createDirectory(atPath: root + "/sub", withIntermediateDirectories: true)
            secret = Array("the secret outside the root".utf8)
            try Data(secret).write(to: URL(fileURLWithPath: folder + "/secret"))
            try FileManager.default.createSymbolicLink(atPath: root + "/escape", withDestinationPath: folder + "/secret")
            try FileManager.default.createSymbolicLink(atPath: root + "/inside", withDestinationPath: root + "/sub")
        }

        func add(_ name: String, count: Int, seed: UInt64) throws -> [UInt8] {
            var state = seed
            let bytes = (0..<count).map { _ -> UInt8 in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return UInt8(truncatingIfNeeded: state >> 33)
            }
            try Data(bytes).write(to: URL(fileURLWithPath: root + "/" + name))
            return bytes
        }

        deinit { try? FileManager.default.removeItem(atPath: folder) }
    }

    /// Log messages, for checking that refusals are logged.
    final class Captured: Sendable {
        let messages = Mutex<[String]>([])
    }

    struct CapturingHandler: LogHandler {
        let captured: Captured
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            captured.messages.withLock { $0.append("\(event.message) \(event.metadata ?? [:])") }
        }
    }

    static func serve<Value: Sendable>(_ root: String, logger: Logger = Logger(label: "test"), chunkBytes: Int = 64 << 10,
                                       _ body: @Sendable (any TestClientProtocol) async throws -> Value) async throws -> Value {
        let runtime = try IORuntime(rings: 1, queueDepth: 32)
        let provider = try await DirectIOFileProvider(rootFolder: root, runtime: runtime, chunkBytes: chunkBytes, buffers: 8, logger: logger)
        let router = Router()
        router.add(middleware: FileMiddleware(fileProvider: provider))
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        let value = try await app.test(.live) { client in try await body(client) }
        await runtime.shutdown()
        return value
    }

    static func bytes(_ response: TestResponse) -> [UInt8] {
        Array(response.body.readableBytesView)
    }

    @Test func wholeFilesAndUnalignedRangesAreByteExact() async throws {
        let tree = try Tree(base: "/var/tmp")
        let files = [
            ("empty", try tree.add("empty", count: 0, seed: 1)),
            ("one", try tree.add("one", count: 1, seed: 2)),
            ("block", try tree.add("block", count: 4095, seed: 3)),
            ("big.bin", try tree.add("big.bin", count: (1 << 20) + 12_345, seed: 4)),
        ]
        let nested = try tree.add("sub/nested", count: 70_001, seed: 5)
        let big = files[3].1
        try await Self.serve(tree.root) { client in
            for (name, bytes) in files {
                try await client.execute(uri: "/" + name, method: .get) { response in
                    #expect(response.status == .ok, "\(name)")
                    #expect(Self.bytes(response) == bytes, "\(name): the body differs from the file")
                }
            }
            try await client.execute(uri: "/sub/nested", method: .get) { #expect(Self.bytes($0) == nested) }
            try await client.execute(uri: "/inside/nested", method: .get) { #expect(Self.bytes($0) == nested, "a symlink inside the root") }
            // Ranges at unaligned offsets and lengths, across chunk boundaries, suffixes.
            for (header, slice) in [
                ("bytes=12345-70000", big[12345...70000]), ("bytes=1-1", big[1...1]), ("bytes=65535-65537", big[65535...65537]),
                ("bytes=1000000-", big[1_000_000...]), ("bytes=0-0", big[0...0]),
                // Hummingbird 2.28's FileMiddleware reads a suffix range ("bytes=-100") as 0...100,
                // not as the last 100 bytes (RFC 9110); the provider serves what it is asked.
                ("bytes=-100", big[0...100]),
            ] {
                try await client.execute(uri: "/big.bin", method: .get, headers: [.range: header]) { response in
                    #expect(response.status == .partialContent, "\(header)")
                    #expect(Self.bytes(response) == Array(slice), "\(header): the body differs from the file's bytes")
                }
            }
        }
    }

    /// ramfs refuses O_DIRECT (tmpfs takes it since Linux 6.6): mounted for the test, as root.
    @Test(.enabled(if: getuid() == 0, "mounting ramfs needs root"))
    func aFilesystemWithoutODirectIsServedThroughThePageCacheAndSaysSo() async throws {
        let mountPoint = "/tmp/directio-hb-ramfs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        guard mount("ramfs", mountPoint, "ramfs", 0, nil) == 0 else {
            rmdir(mountPoint)
            Issue.record("mount -t ramfs failed: errno \(errno)")
            return
        }
        defer {
            umount2(mountPoint, Int32(MNT_DETACH))
            rmdir(mountPoint)
        }
        let tree = try Tree(base: mountPoint)
        let bytes = try tree.add("page-cache.bin", count: 200_003, seed: 7)
        let captured = Captured()
        let logger = Logger(label: "test") { _ in CapturingHandler(captured: captured) }
        try await Self.serve(tree.root, logger: logger) { client in
            try await client.execute(uri: "/page-cache.bin", method: .get) { #expect(Self.bytes($0) == bytes) }
            try await client.execute(uri: "/page-cache.bin", method: .get, headers: [.range: "bytes=777-150000"]) { #expect(Self.bytes($0) == Array(bytes[777...150_000])) }
        }
        #expect(captured.messages.withLock { $0 }.contains { $0.contains("serving through the page cache") })
    }

    @Test func missingFilesAndFoldersAreNotServed() async throws {
        let tree = try Tree(base: "/var/tmp")
        try await Self.serve(tree.root) { client in
            try await client.execute(uri: "/nothing-here", method: .get) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/sub", method: .get) { #expect($0.status == .movedPermanently) }
            try await client.execute(uri: "/sub/", method: .get) { #expect($0.status == .notFound) }
        }
    }

    /// Nothing outside the root, whatever the path: refused with a 4xx (by the middleware or
    /// the provider), the secret never in a body, and the provider's refusals logged.
    @Test func nothingOutsideTheRootIsEverServed() async throws {
        let tree = try Tree(base: "/var/tmp")
        _ = try tree.add("public", count: 10, seed: 8)
        let captured = Captured()
        let logger = Logger(label: "test") { _ in CapturingHandler(captured: captured) }
        let secret = tree.secret
        let attempts = ["/../secret", "/%2e%2e/secret", "/%2E%2E/secret", "/%252e%252e/secret", "/sub/../../secret", "/sub/%2e%2e%2f%2e%2e%2fsecret",
                        "/escape", "//" + tree.folder + "/secret", "/public%00", "/" + String(repeating: "a", count: 5000), "/" + String(repeating: "b/", count: 3000)]
        try await Self.serve(tree.root, logger: logger) { client in
            for uri in attempts {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect((400..<500).contains(response.status.code), "\(uri.prefix(80)): \(response.status)")
                    #expect(!Self.bytes(response).starts(with: secret), "\(uri.prefix(80)) served the secret")
                }
            }
            try await client.execute(uri: "/public", method: .get) { #expect($0.status == .ok) }
        }
        #expect(captured.messages.withLock { $0 }.contains { $0.contains("refused a request path") && $0.contains("symlink") })
        // The provider's own checks, for what the middleware would have stopped first.
        let root = ServedPath.realPath(tree.root)! + "/"
        for path in ["/../secret", "/sub/../../secret", "/%2e%2e/secret", "/a\u{0}b", "/escape", "/" + String(repeating: "c", count: 300)] {
            guard case .refused = ServedPath.resolve(path, under: root) else {
                Issue.record("the provider did not refuse \(path.prefix(80))")
                continue
            }
        }
        #expect(ServedPath.resolve("///public", under: root) == .file(root + "public"))
        #expect(ServedPath.resolve("/inside/../public", under: root) != .file(tree.folder + "/secret"))
    }

    /// A path checked inside the root, then swapped for a symlink to a file outside before it
    /// is opened (the window between the check and the open): the provider refuses the file
    /// it opened, which is not the one it checked, and says so.
    @Test func aPathSwappedForASymlinkAfterItsCheckIsRefused() async throws {
        let tree = try Tree(base: "/var/tmp")
        _ = try tree.add("swapped", count: 5000, seed: 13)
        let captured = Captured()
        let runtime = try IORuntime(rings: 1, queueDepth: 8)
        let provider = try await DirectIOFileProvider(rootFolder: tree.root, runtime: runtime, buffers: 2,
                                                      logger: Logger(label: "test") { _ in CapturingHandler(captured: captured) })
        let id = try #require(provider.getFileIdentifier("/swapped"))
        #expect(unlink(tree.root + "/swapped") == 0)
        #expect(symlink(tree.folder + "/secret", tree.root + "/swapped") == 0)
        // Closed at the end: an EmbeddedChannel left open keeps itself and its pipeline alive.
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        do {
            _ = try await provider.loadFile(id: id, range: 0...4999, context: BasicRequestContext(source: .init(channel: channel, logger: Logger(label: "test"))))
            Issue.record("the provider served a file it had not checked")
        } catch let error as HTTPError {
            #expect(error.status == .notFound)
        }
        #expect(captured.messages.withLock { $0 }.contains { $0.contains("changed after its path was checked") })
        await runtime.shutdown()
    }

    /// A file that shrinks while it is served ends its response with an error: the client gets
    /// a broken response, never fewer bytes than the length it was promised, passed off as whole.
    @Test func aFileThatShrinksWhileServedEndsTheResponseWithAnError() async throws {
        let tree = try Tree(base: "/var/tmp")
        _ = try tree.add("shrinking", count: 300_000, seed: 9)
        let runtime = try IORuntime(rings: 1, queueDepth: 8)
        let pool = try BufferPool(count: 1, bufferBytes: 64 << 10)
        let file = try AsyncFile(path: tree.root + "/shrinking", options: OpenOptions(access: .readOnly, directIO: .preferred), runtime: runtime)
        #expect(truncate(tree.root + "/shrinking", 100_000) == 0)
        var writer: any ResponseBodyWriter = Collector()
        do {
            try await ChunkStream(file: file, pool: pool, readAhead: 1, range: 0...299_999).write(to: &writer)
            Issue.record("a response promised 300,000 bytes of a 100,000-byte file and ended normally")
        } catch let error as DirectIOError {
            #expect(error.description.contains("shrank"), "\(error)")
        }
        #expect(pool.available == 1, "the pool buffer was not returned")
        await runtime.shutdown()
    }

    /// 200 random ranges streamed with 1 to 5 chunks in flight and chunks of 4-64 KiB: every
    /// body is the file's bytes, and every pool buffer comes back.
    @Test func randomRangesStreamByteExactWithAnyReadAhead() async throws {
        let tree = try Tree(base: "/var/tmp")
        let bytes = try tree.add("ranges.bin", count: 700_001, seed: 11)
        let runtime = try IORuntime(rings: 1, queueDepth: 16)
        let file = try AsyncFile(path: tree.root + "/ranges.bin", options: OpenOptions(access: .readOnly, directIO: .preferred), runtime: runtime)
        var state: UInt64 = 12
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        for round in 0..<200 {
            let chunk = 4096 << next(5), slices = 1 + next(5)
            let pool = try BufferPool(count: slices, bufferBytes: chunk)
            let lower = next(bytes.count), upper = lower + next(bytes.count - lower)
            var collector = Collector()
            var writer: any ResponseBodyWriter = collector
            try await ChunkStream(file: file, pool: pool, readAhead: slices, range: lower...upper).write(to: &writer)
            collector = try #require(writer as? Collector)
            #expect(collector.bytes == Array(bytes[lower...upper]), "round \(round): \(lower)...\(upper), \(chunk)-byte chunks, \(slices) at once")
            #expect(pool.available == slices)
        }
        await runtime.shutdown()
    }

    /// Chunks reach the writer in the pool buffers the disk read them into (no copy), and each
    /// comes back to its pool when the last copy of its `ByteBuffer` is gone, as NIO drops them
    /// once sent. The writer here keeps the last `held` buffers, like a socket's queue, and a
    /// copy of one is written to (NIO's own memory then, through the lending allocator); a
    /// response longer than the pool still ends, since one that waits has nothing in flight.
    @Test func chunksAreLentToTheWriterAndComeBackWhenDropped() async throws {
        let tree = try Tree(base: "/var/tmp")
        let bytes = try tree.add("lent.bin", count: 1_000_003, seed: 13)
        let runtime = try IORuntime(rings: 1, queueDepth: 16)
        let file = try AsyncFile(path: tree.root + "/lent.bin", options: OpenOptions(access: .readOnly, directIO: .preferred), runtime: runtime)
        let pool = try BufferPool(count: 4, bufferBytes: 64 << 10)
        // Where the pool's buffers are: all taken at once, then given back.
        var taken: [LentBuffers.Lent] = []
        while let buffer = pool.take() { taken.append(LentBuffers.Lent(buffer)) }
        let poolBuffers = taken.map { UInt(bitPattern: $0.address)...(UInt(bitPattern: $0.address) + UInt($0.count) - 1) }
        taken.removeAll()
        #expect(poolBuffers.count == 4 && pool.available == 4)
        final class Holder: @unchecked Sendable {
            var queue: [ByteBuffer] = []
            var bytes: [UInt8] = []
            var lentChunks = 0
            var mostHeld = 0
        }
        struct HoldingWriter: ResponseBodyWriter {
            let holder: Holder
            let poolBuffers: [ClosedRange<UInt>]
            let held: Int
            mutating func write(_ buffer: ByteBuffer) async throws {
                let address = buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
                if poolBuffers.contains(where: { $0.contains(address) }) { holder.lentChunks += 1 }
                holder.bytes += buffer.readableBytesView
                holder.queue.append(buffer)
                // A copy written to moves to NIO's memory; the pool buffer stays with the original.
                var copy = buffer
                copy.setInteger(UInt8(0xEE), at: copy.readerIndex)
                holder.mostHeld = max(holder.mostHeld, LentBuffers.outstanding)
                if holder.queue.count > held { holder.queue.removeFirst() }
            }
            consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
        }
        for (lower, upper, held) in [(0, 999_999, 2), (12_345, 1_000_002, 3), (70_000, 70_099, 1), (1, 500_000, 0)] {
            let holder = Holder()
            var writer: any ResponseBodyWriter = HoldingWriter(holder: holder, poolBuffers: poolBuffers, held: held)
            try await ChunkStream(file: file, pool: pool, readAhead: 4, range: lower...upper).write(to: &writer)
            #expect(holder.bytes == Array(bytes[lower...upper]), "\(lower)...\(upper)")
            let chunks = ChunkStream.chunks(lower...upper, chunkBytes: 64 << 10, alignment: file.limits.offsetAlignment)
            #expect(holder.lentChunks == chunks, "every chunk is a pool buffer's memory")
            #expect(holder.mostHeld <= pool.count)
            #expect(pool.available == pool.count - min(held, chunks), "only the buffers the writer holds are out")
            holder.queue.removeAll()
            #expect(pool.available == pool.count && LentBuffers.outstanding == 0, "dropped buffers come back")
        }
        await runtime.shutdown()
    }

    struct Collector: ResponseBodyWriter {
        var bytes: [UInt8] = []
        mutating func write(_ buffer: ByteBuffer) async throws { bytes += buffer.readableBytesView }
        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }
}
