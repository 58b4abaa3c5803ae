import DirectIO
import Hummingbird
import NIOCore

/// One response's bytes: `range` of `file`, read in block-aligned chunks into one pool buffer,
/// each copied into a `ByteBuffer` and written while the next chunk is read.
struct ChunkStream: Sendable {
    let file: AsyncFile
    let pool: BufferPool
    let chunkBytes: Int
    let range: ClosedRange<Int>

    /// The pool buffer's memory, lent to the read of the next chunk.
    ///
    /// Unchecked sendability: the read that uses it is awaited (`async let`, also when the
    /// write fails or the task is cancelled) before the buffer is copied from again or
    /// returned to the pool, so the memory is never used by two at once.
    private struct Memory: @unchecked Sendable {
        let base: UnsafeMutableRawPointer
        let count: Int
    }

    func write(to writer: inout any ResponseBodyWriter) async throws {
        let buffer = await pool.takeWaiting()
        let memory = Memory(base: buffer.baseAddress, count: buffer.count)
        // Reads start at a multiple of the direct-I/O alignment: whole chunks go straight to
        // the pool buffer; the range's ends are cut out of the first and last.
        let alignment = Int64(max(file.limits.offsetAlignment, 1))
        let end = Int64(range.upperBound) + 1
        var chunkStart = Int64(range.lowerBound) / alignment * alignment
        var pending = try await read(memory, at: chunkStart, from: Int64(range.lowerBound), to: end)
        while true {
            chunkStart += Int64(chunkBytes)
            guard chunkStart < end else {
                try await writer.write(pending)
                break
            }
            let next = chunkStart
            async let following = read(memory, at: next, from: next, to: end)
            try await writer.write(pending)
            pending = try await following
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
