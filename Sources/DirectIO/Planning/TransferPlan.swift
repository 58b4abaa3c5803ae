/// Caller memory for one part of a transfer: `length` bytes at `address`.
package struct CallerSegment: Sendable, Equatable {
    package var address: UInt
    package var length: Int

    package init(address: UInt, length: Int) {
        self.address = address
        self.length = length
    }
}

/// A transfer's caller memory, in file order: one buffer (held inline: most transfers) or
/// the buffers of a vectored call.
package enum CallerSegments: Sendable, Equatable {
    case one(CallerSegment)
    case many([CallerSegment])

    package var count: Int {
        switch self {
        case .one: 1
        case .many(let segments): segments.count
        }
    }

    package subscript(index: Int) -> CallerSegment {
        switch self {
        case .one(let segment): segment
        case .many(let segments): segments[index]
        }
    }

    /// Bytes in all segments.
    package var total: Int {
        switch self {
        case .one(let segment): segment.length
        case .many(let segments): segments.reduce(0) { $0 + $1.length }
        }
    }
}

/// One piece of a device I/O: memory the device reads or writes directly.
package struct DevicePiece: Sendable, Equatable {
    package enum Memory: Sendable, Equatable {
        /// The caller's own memory, reached by DMA (the seed's direct-to-BIO path).
        case caller(address: UInt)
        /// The I/O's bounce buffer, at this offset.
        case bounce(offset: Int)
    }

    package var memory: Memory
    package var length: Int
}

/// One request to the device: a contiguous, aligned file range and the memory for it.
package struct DeviceIO: Sendable, Equatable {
    package var fileOffset: Int64
    package var length: Int
    /// Its memory: `plan.pieces[pieces]`, in file order.
    package var pieces: Range<Int>
}

/// A file range and where it sits in the bounce buffer of device I/O `io`: a block the caller
/// covers only partly, read from the file before the caller's bytes are copied over it and
/// the I/O writes it back (read-modify-write).
package struct BounceBlock: Sendable, Equatable {
    package var io: Int
    package var fileOffset: Int64
    package var bounceOffset: Int
    package var length: Int
}

/// Bytes to copy between caller memory and an I/O's bounce buffer: before the write is
/// submitted, or after the read has completed.
package struct BounceCopy: Sendable, Equatable {
    /// Index of the device I/O whose bounce buffer holds the bytes.
    package var io: Int
    /// The file offset of the first byte.
    package var fileOffset: Int64
    package var bounceOffset: Int
    package var callerAddress: UInt
    package var length: Int
}

/// How to move a caller's bytes to or from the device within the device's limits: the device
/// I/Os, and the bytes that go through bounce buffers because alignment leaves no other way.
///
/// Flat lists (the I/Os' pieces, edge blocks and copies each in one list, pointing at their
/// I/O by index), so making and reading a plan touches a few lists, not a list per I/O.
package struct TransferPlan: Sendable, Equatable {
    package var ios: [DeviceIO] = []
    package var pieces: [DevicePiece] = []
    /// Writes only: the blocks to read before writing (at most two: the head and the tail).
    package var readBeforeWrite: [BounceBlock] = []
    package var copies: [BounceCopy] = []
    /// Caller bytes moved by DMA straight to or from the caller's memory.
    package var bytesDirect = 0
    /// Caller bytes copied through bounce buffers.
    package var bytesBounced = 0
    /// Bytes the device moves that the caller did not ask for (widening to blocks).
    package var bytesWidened = 0

    package init() {}

    /// Whether the plan's lists are of the usual size, worth keeping for another transfer.
    var isSmall: Bool {
        ios.capacity <= 16 && pieces.capacity <= 64 && copies.capacity <= 64
    }

    /// Empties the plan, keeping its lists' storage for the next.
    mutating func removeAll() {
        // One by one: these lists hold a few elements, and `removeAll(keepingCapacity:)`
        // goes through `replaceSubrange`, about 100 instructions a list.
        while !ios.isEmpty { ios.removeLast() }
        while !pieces.isEmpty { pieces.removeLast() }
        while !readBeforeWrite.isEmpty { readBeforeWrite.removeLast() }
        while !copies.isEmpty { copies.removeLast() }
        bytesDirect = 0
        bytesBounced = 0
        bytesWidened = 0
    }

    /// Whether any I/O uses the bounce buffer.
    package var needsBounce: Bool {
        pieces.contains { if case .bounce = $0.memory { true } else { false } }
    }
}
