/// Zero-copy sends (io_uring SEND_ZC, Linux 6.0).
extension IOEngine {
    /// Starts sending `count` bytes of `buffer`, from `bufferOffset`, on the connected socket
    /// `socket`, without copying them into socket buffers: the network stack transmits from
    /// the pool buffer itself.
    ///
    /// The engine owns the buffer until the kernel's notification completion says the stack
    /// has let go of it, which for TCP can be long after the send's own completion (after the
    /// peer's ACK). `reap` hands the buffer back only then, also when the send failed or was
    /// cancelled; its outcome says how many bytes were sent (a short send is not continued:
    /// send the rest as a new request) and, in `copiedByKernel`, whether the kernel had to
    /// copy after all (loopback, or a NIC without scatter-gather).
    public func submitZeroCopySend(_ buffer: consuming PoolBuffer, bufferOffset: Int = 0, count: Int? = nil, to socket: Int32, tag: UInt64) throws(DirectIOError) {
        let length = count ?? buffer.count - bufferOffset
        guard bufferOffset >= 0, length >= 0, bufferOffset + length <= buffer.count, length <= Int(UInt32.max) else {
            throw DirectIOError(.invalidArgument, operation: "zero-copy send", length: length,
                                detail: "\(length) bytes from offset \(bufferOffset) do not fit the \(buffer.count)-byte buffer")
        }
        guard supports(.sendZeroCopy) else {
            throw DirectIOError(.unsupported, operation: "zero-copy send", detail: kind == .blocking ? "the blocking engine has no SEND_ZC" : "this kernel's io_uring lacks SEND_ZC (Linux 6.0)")
        }
        let operation = IOOperation.sendZeroCopy(fd: socket, from: buffer.baseAddress + bufferOffset, count: length, fixedSlot: fixedIndex(of: buffer.poolSlot))
        try submit(operation, tag: tag, buffer: buffer, blockBytes: 1)
    }
}
