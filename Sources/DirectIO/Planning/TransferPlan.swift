/// Caller memory for one part of a transfer: `length` bytes at `address`.
package struct CallerSegment: Sendable, Equatable {
    package var address: UInt
    package var length: Int

    package init(address: UInt, length: Int) {
        self.address = address
        self.length = length
    }
}

/// A transfer's caller memory, in file order (most transfers have one or two segments).
package typealias CallerSegments = InlineList<2, CallerSegment>

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
    /// At most three for the common shape: a bounced head, the caller's aligned middle, a bounced tail.
    package var pieces: InlineList<3, DevicePiece>
    /// Writes only: blocks the caller covers only partly, to be read from the file into the
    /// bounce buffer before the caller's bytes are copied over them (read-modify-write).
    package var readBeforeWrite: InlineList<2, BounceBlock>

    package var length: Int { pieces.reduce(0) { $0 + $1.length } }
    /// Bytes of bounce buffer this I/O uses.
    package var bounceBytes: Int {
        pieces.reduce(0) { total, piece in
            if case .bounce = piece.memory { return total + piece.length }
            return total
        }
    }
}

/// A file range and where it sits in the I/O's bounce buffer.
package struct BounceBlock: Sendable, Equatable {
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
package struct TransferPlan: Sendable, Equatable {
    package var ios: InlineList<1, DeviceIO>
    package var copies: InlineList<2, BounceCopy>
    /// Caller bytes moved by DMA straight to or from the caller's memory.
    package var bytesDirect: Int
    /// Caller bytes copied through bounce buffers.
    package var bytesBounced: Int
    /// Bytes the device moves that the caller did not ask for (widening to blocks).
    package var bytesWidened: Int
}
