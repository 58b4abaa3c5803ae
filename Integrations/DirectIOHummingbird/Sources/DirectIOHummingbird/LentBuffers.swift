import DirectIO
@_spi(CustomByteBufferAllocator) import NIOCore
import Glibc
import Synchronization

/// Pool buffers lent to NIO as the storage of `ByteBuffer`s, so a chunk read from disk is
/// written to the socket from the memory the disk wrote it to, with no copy.
///
/// NIO frees a buffer's storage through its allocator's `deallocate`, a C function with no
/// context: a lent buffer is found again by its address here, and dropping it returns it to
/// its pool. Until then it is NIO's alone (the read that filled it has completed), and it
/// comes back however the response ends: sent, failed or dropped with its connection.
///
/// Storage NIO allocates itself through this allocator (a copy of a lent buffer that someone
/// writes to, or one that grows) is plain `malloc` memory, freed with `free`.
enum LentBuffers {
    /// A pool buffer with a class's identity, so a dictionary can hold it by address; the buffer
    /// goes back to its pool when the last reference is dropped.
    ///
    /// Unchecked sendability: every field is a `let`, and the memory behind `address` has one
    /// user at a time: the read that fills it (`ChunkStream`), then NIO.
    final class Lent: @unchecked Sendable {
        let address: UnsafeMutableRawPointer
        let count: Int
        private let buffer: PoolBuffer

        init(_ buffer: consuming PoolBuffer) {
            address = buffer.baseAddress
            count = buffer.count
            self.buffer = buffer
        }
    }

    private static let lent = Mutex<[UInt: Lent]>([:])

    /// How many buffers NIO holds now.
    static var outstanding: Int { lent.withLock { $0.count } }

    /// `buffer`'s whole memory as a `ByteBuffer` whose readable bytes are `readable`; the pool
    /// buffer comes back when NIO frees the storage (the last copy of the `ByteBuffer` is gone).
    static func byteBuffer(_ buffer: Lent, readable: Range<Int>) -> ByteBuffer {
        lent.withLock { $0[UInt(bitPattern: buffer.address)] = buffer }
        return ByteBuffer(takingOwnershipOf: UnsafeMutableRawBufferPointer(start: buffer.address, count: buffer.count), allocator: allocator,
                          readerIndex: readable.lowerBound, writerIndex: readable.upperBound)
    }

    /// Takes `address` back from NIO: the lent buffer, or nil for memory NIO allocated.
    private static func takeBack(_ address: UnsafeMutableRawPointer) -> Lent? {
        lent.withLock { $0.removeValue(forKey: UInt(bitPattern: address)) }
    }

    static let allocator = ByteBufferAllocator(
        allocate: { size in malloc(max(size, 1)) },
        reallocate: { pointer, oldSize, newSize in
            guard let pointer else { return malloc(max(newSize, 1)) }
            // A pool buffer cannot grow in place: the bytes move to NIO's own memory.
            guard let taken = takeBack(pointer) else { return realloc(pointer, max(newSize, 1)) }
            let moved = malloc(max(newSize, 1))
            moved?.copyMemory(from: taken.address, byteCount: min(oldSize, newSize))
            return moved
        },
        deallocate: { pointer in
            if takeBack(pointer) == nil { free(pointer) }
        },
        copy: { destination, source, count in destination.copyMemory(from: source, byteCount: count) }
    )
}
