import DirectIO
import Hummingbird
import NIOCore

/// One response's bytes: `range` of `file`, read in block-aligned chunks, each into a pool
/// buffer that is then lent to NIO as the `ByteBuffer` it writes (`LentBuffers`): the bytes go
/// from the disk's DMA to the socket with no copy. Up to `readAhead` chunks are read or waiting
/// for the socket at once, so the disk is kept busy (O_DIRECT has no kernel read-ahead).
///
/// A response waits for a pool buffer only when none of its chunks is being read or waiting to
/// be written (the chunks it wrote are NIO's, which frees them as the socket takes them): so no
/// response can wait for a buffer that only another waiting response would return. Reads ahead
/// take only buffers that are free at once; a buffer coming back goes to a waiting response first.
struct ChunkStream: Sendable {
    let file: AsyncFile
    /// Buffers of one chunk each.
    let pool: BufferPool
    let readAhead: Int
    let range: ClosedRange<Int>

    var chunkBytes: Int { pool.bufferBytes }

    /// How many chunks a response for `range` reads (the first starts at an aligned offset).
    static func chunks(_ range: ClosedRange<Int>, chunkBytes: Int, alignment: Int) -> Int {
        let alignment = max(alignment, 1)
        let firstChunk = range.lowerBound / alignment * alignment
        return (range.upperBound + 1 - firstChunk + chunkBytes - 1) / chunkBytes
    }

    /// Where a chunk's read writes: the memory of a pool buffer that `write` holds meanwhile.
    ///
    /// Unchecked sendability: a read is the only user of its memory until it returns, and the
    /// buffer is lent to NIO (or dropped) only after that: `write` keeps the buffers outside
    /// its task group, which awaits every read before it returns, also when it throws.
    private struct Memory: @unchecked Sendable {
        let address: UnsafeMutableRawPointer
        let count: Int
    }

    func write(to writer: inout any ResponseBodyWriter) async throws {
        // Reads start at a multiple of the direct-I/O alignment: whole chunks go straight to
        // the pool buffers; the range's ends are cut out of the first and last.
        let alignment = Int64(max(file.limits.offsetAlignment, 1))
        let end = Int64(range.upperBound) + 1
        let firstChunk = Int64(range.lowerBound) / alignment * alignment
        let chunks = Self.chunks(range, chunkBytes: chunkBytes, alignment: file.limits.offsetAlignment)
        let readAhead = max(readAhead, 1)
        // The buffers of the chunks being read or read and not yet written. A child task holds
        // none of them (only their memory), so none stays with a finished task's result.
        var buffers: [Int: LentBuffers.Lent] = [:]
        try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            func start(_ index: Int, into buffer: consuming PoolBuffer) {
                let lent = LentBuffers.Lent(buffer)
                buffers[index] = lent
                let chunkStart = firstChunk + Int64(index) * Int64(chunkBytes)
                // The read rounds the bytes the response needs up to the alignment (past the
                // end of the file it simply returns less).
                let needed = min(Int64(chunkBytes), end - chunkStart)
                let memory = Memory(address: lent.address, count: Int(min(Int64(chunkBytes), (needed + alignment - 1) / alignment * alignment)))
                group.addTask { (index, try await file.read(into: UnsafeMutableRawBufferPointer(start: memory.address, count: memory.count), at: chunkStart)) }
            }
            var started = 0
            var ready: [Int: ByteBuffer] = [:]
            for index in 0..<chunks {
                if started == index {
                    // Nothing of this response is read or waiting to be written: it may wait.
                    start(index, into: await pool.takeWaiting())
                    started += 1
                }
                while started < min(chunks, index + readAhead), let buffer = pool.take() {
                    start(started, into: buffer)
                    started += 1
                }
                while ready[index] == nil {
                    guard let (done, got) = try await group.next(), let lent = buffers.removeValue(forKey: done) else {
                        throw DirectIOError(.unexpected, operation: "serve file", path: file.path, detail: "chunk \(index) was never read")
                    }
                    ready[done] = try lend(lent, at: firstChunk + Int64(done) * Int64(chunkBytes), got: got, end: end)
                }
                if let bytes = ready.removeValue(forKey: index) { try await writer.write(bytes) }
            }
        }
        try await writer.finish(nil)
    }

    /// Lends the chunk read at `chunkStart` to NIO, with its bytes from the range's start to at
    /// most `end` readable. A file that ends sooner than the response promised (it shrank while
    /// served) ends the response with an error, so the client sees a broken response, never a
    /// short one; the buffer then goes back to its pool.
    private func lend(_ lent: LentBuffers.Lent, at chunkStart: Int64, got: Int, end: Int64) throws -> ByteBuffer {
        let needed = min(Int64(chunkBytes), end - chunkStart)
        guard Int64(got) >= needed else {
            throw DirectIOError(.ioError, operation: "serve file", path: file.path, offset: chunkStart + Int64(got),
                                detail: "the file ends at \(chunkStart + Int64(got)) bytes, short of the \(end) its response promised (it shrank while served)")
        }
        let from = max(chunkStart, Int64(range.lowerBound))
        return LentBuffers.byteBuffer(lent, readable: Int(from - chunkStart)..<Int(needed))
    }
}
