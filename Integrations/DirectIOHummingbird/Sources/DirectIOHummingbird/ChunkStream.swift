import DirectIO
import Hummingbird
import NIOCore

/// One response's bytes: `range` of `file`, read in block-aligned chunks into pool buffers,
/// each copied into a `ByteBuffer` and written in order while the next ones are read: as many
/// chunks as the response's pool buffer holds are read or waiting to be written at once, so
/// the disk is kept busy (O_DIRECT has no kernel read-ahead) without buffering more than that.
struct ChunkStream: Sendable {
    let file: AsyncFile
    let pool: BufferPool
    let chunkBytes: Int
    let range: ClosedRange<Int>

    /// A pool buffer's memory, lent to the read of one chunk.
    ///
    /// Unchecked sendability: a chunk's read is the only user of its memory until it returns
    /// (the bytes are copied out before), and the next chunk that uses the same memory starts
    /// only after that; every read is awaited (the task group waits for its children, also
    /// when a write fails or the task is cancelled) before the buffers go back to the pool.
    private struct Memory: @unchecked Sendable {
        let base: UnsafeMutableRawPointer
        let count: Int
    }

    /// How many chunks a response for `range` reads (the first starts at an aligned offset).
    static func chunks(_ range: ClosedRange<Int>, chunkBytes: Int, alignment: Int) -> Int {
        let alignment = max(alignment, 1)
        let firstChunk = range.lowerBound / alignment * alignment
        return (range.upperBound + 1 - firstChunk + chunkBytes - 1) / chunkBytes
    }

    func write(to writer: inout any ResponseBodyWriter) async throws {
        // Reads start at a multiple of the direct-I/O alignment: whole chunks go straight to
        // the pool buffers; the range's ends are cut out of the first and last.
        let alignment = Int64(max(file.limits.offsetAlignment, 1))
        let end = Int64(range.upperBound) + 1
        let firstChunk = Int64(range.lowerBound) / alignment * alignment
        let chunks = Self.chunks(range, chunkBytes: chunkBytes, alignment: file.limits.offsetAlignment)
        // One pool buffer per response, `readAhead` chunks long: a chunk per slice.
        let buffer = await pool.takeWaiting()
        let slices = max(1, min(buffer.count / chunkBytes, chunks))
        let memories = (0..<slices).map { Memory(base: buffer.baseAddress + $0 * chunkBytes, count: chunkBytes) }
        try await withThrowingTaskGroup(of: (Int, ByteBuffer).self) { group in
            func start(_ index: Int) {
                let chunkStart = firstChunk + Int64(index) * Int64(chunkBytes)
                let from = max(chunkStart, Int64(range.lowerBound))
                let memory = memories[index % memories.count]
                group.addTask { (index, try await read(memory, at: chunkStart, from: from, to: end)) }
            }
            var started = 0
            while started < min(memories.count, chunks) {
                start(started)
                started += 1
            }
            var ready: [Int: ByteBuffer] = [:]
            for index in 0..<chunks {
                while ready[index] == nil {
                    guard let (done, bytes) = try await group.next() else {
                        throw DirectIOError(.unexpected, operation: "serve file", path: file.path, detail: "chunk \(index) was never read")
                    }
                    ready[done] = bytes
                }
                if let bytes = ready.removeValue(forKey: index) { try await writer.write(bytes) }
                // This chunk's memory was free once its bytes were copied: the next read may use it.
                if started < chunks {
                    start(started)
                    started += 1
                }
            }
        }
        try await writer.finish(nil)
        _ = consume buffer
    }

    /// Reads the chunk at `chunkStart` and returns its bytes from `from` to at most `to`, copied.
    /// A file that ends sooner than the response promised (it shrank while served) ends the
    /// response with an error, so the client sees a broken response, never a short one.
    private func read(_ memory: Memory, at chunkStart: Int64, from: Int64, to end: Int64) async throws -> ByteBuffer {
        let alignment = Int64(max(file.limits.offsetAlignment, 1))
        // The bytes of this chunk the response needs; the read rounds them up to the alignment
        // (past the end of the file it simply returns less).
        let needed = min(Int64(memory.count), end - chunkStart)
        let count = Int(min(Int64(memory.count), (needed + alignment - 1) / alignment * alignment))
        let got = try await file.read(into: UnsafeMutableRawBufferPointer(start: memory.base, count: count), at: chunkStart)
        guard Int64(got) >= needed else {
            throw DirectIOError(.ioError, operation: "serve file", path: file.path, offset: chunkStart + Int64(got),
                                detail: "the file ends at \(chunkStart + Int64(got)) bytes, short of the \(end) its response promised (it shrank while served)")
        }
        return ByteBuffer(bytes: UnsafeRawBufferPointer(start: memory.base + Int(from - chunkStart), count: Int(chunkStart + needed - from)))
    }
}
