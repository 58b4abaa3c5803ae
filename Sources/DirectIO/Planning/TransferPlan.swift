/// Caller memory for one part of a transfer: `length` bytes at `address`.
public struct CallerSegment: Sendable, Equatable {
    public var address: UInt
    public var length: Int

    public init(address: UInt, length: Int) {
        self.address = address
        self.length = length
    }
}

/// One piece of a device I/O: memory the device reads or writes directly.
public struct DevicePiece: Sendable, Equatable {
    public enum Memory: Sendable, Equatable {
        /// The caller's own memory, reached by DMA (the seed's direct-to-BIO path).
        case caller(address: UInt)
        /// The I/O's bounce buffer, at this offset.
        case bounce(offset: Int)
    }

    public var memory: Memory
    public var length: Int
}

/// One request to the device: a contiguous, aligned file range and the memory for it.
public struct DeviceIO: Sendable, Equatable {
    public var fileOffset: Int64
    public var pieces: [DevicePiece]
    /// Writes only: blocks the caller covers only partly, to be read from the file into the
    /// bounce buffer before the caller's bytes are copied over them (read-modify-write).
    public var readBeforeWrite: [BounceBlock]

    public var length: Int { pieces.reduce(0) { $0 + $1.length } }
    /// Bytes of bounce buffer this I/O uses.
    public var bounceBytes: Int {
        pieces.reduce(0) { total, piece in
            if case .bounce = piece.memory { return total + piece.length }
            return total
        }
    }
}

/// A file range and where it sits in the I/O's bounce buffer.
public struct BounceBlock: Sendable, Equatable {
    public var fileOffset: Int64
    public var bounceOffset: Int
    public var length: Int
}

/// Bytes to copy between caller memory and an I/O's bounce buffer: before the write is
/// submitted, or after the read has completed.
public struct BounceCopy: Sendable, Equatable {
    /// Index of the device I/O whose bounce buffer holds the bytes.
    public var io: Int
    /// The file offset of the first byte.
    public var fileOffset: Int64
    public var bounceOffset: Int
    public var callerAddress: UInt
    public var length: Int
}

/// How to move a caller's bytes to or from the device within the device's limits: the device
/// I/Os, and the bytes that go through bounce buffers because alignment leaves no other way.
public struct TransferPlan: Sendable, Equatable {
    public var ios: [DeviceIO]
    public var copies: [BounceCopy]
    /// Caller bytes moved by DMA straight to or from the caller's memory.
    public var bytesDirect: Int
    /// Caller bytes copied through bounce buffers.
    public var bytesBounced: Int
    /// Bytes the device moves that the caller did not ask for (widening to blocks).
    public var bytesWidened: Int
}
