/// io_uring operation codes DirectIO issues, with the kernel's numbering
/// (`enum io_uring_op` in include/uapi/linux/io_uring.h; the numbers are ABI and never change).
/// They are defined here rather than imported so that older kernel headers still build.
package enum Opcode: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case nop = 0
    case readv = 1
    case writev = 2
    case fsync = 3
    case readFixed = 4
    case writeFixed = 5
    case asyncCancel = 14
    case fallocate = 17
    case read = 22
    case write = 23
    case splice = 30
    case sendZeroCopy = 47

    package var description: String {
        switch self {
        case .nop: "NOP"
        case .readv: "READV"
        case .writev: "WRITEV"
        case .fsync: "FSYNC"
        case .readFixed: "READ_FIXED"
        case .writeFixed: "WRITE_FIXED"
        case .asyncCancel: "ASYNC_CANCEL"
        case .fallocate: "FALLOCATE"
        case .read: "READ"
        case .write: "WRITE"
        case .splice: "SPLICE"
        case .sendZeroCopy: "SEND_ZC"
        }
    }

    /// Whether a synchronous caller's request of this kind runs as a system call on its thread
    /// even on a ring engine (`RingBackend.enqueueWaited` says why).
    package var runsAsSystemCallWhenWaited: Bool {
        switch self {
        case .write, .writeFixed, .writev, .fsync, .fallocate: true
        default: false
        }
    }

    /// Whether the operation moves data from the file into memory.
    var readsIntoMemory: Bool { self == .read || self == .readv || self == .readFixed }
    /// Whether the operation moves data and so may complete short.
    package var transfersData: Bool {
        switch self {
        case .read, .write, .readv, .writev, .readFixed, .writeFixed: true
        default: false
        }
    }
}

/// `io_uring_register` opcodes DirectIO uses (`enum io_uring_register_op`, ABI-stable numbers).
enum RegisterOpcode: UInt32 {
    case registerBuffers = 0
    case unregisterBuffers = 1
    case registerProbe = 8
    case registerFiles2 = 13
    case updateFiles2 = 14
    case registerBuffers2 = 15
    case updateBuffers = 16
    case registerRingFDs = 20
    case unregisterRingFDs = 21
    case cloneBuffers = 30

    var name: String {
        switch self {
        case .registerBuffers: "IORING_REGISTER_BUFFERS"
        case .unregisterBuffers: "IORING_UNREGISTER_BUFFERS"
        case .registerProbe: "IORING_REGISTER_PROBE"
        case .registerFiles2: "IORING_REGISTER_FILES2"
        case .updateFiles2: "IORING_REGISTER_FILES_UPDATE2"
        case .registerBuffers2: "IORING_REGISTER_BUFFERS2"
        case .updateBuffers: "IORING_REGISTER_BUFFERS_UPDATE"
        case .registerRingFDs: "IORING_REGISTER_RING_FDS"
        case .unregisterRingFDs: "IORING_UNREGISTER_RING_FDS"
        case .cloneBuffers: "IORING_REGISTER_CLONE_BUFFERS"
        }
    }
}
