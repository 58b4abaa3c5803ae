import CDirectIO
import Glibc
import SystemPackage

/// io_uring_register(2) calls: probing opcodes, the fixed-buffer table and the fixed-file table.
extension IORing {
    /// Which opcodes this kernel supports (IORING_REGISTER_PROBE, 5.6+).
    func probe() throws(Errno) -> OpcodeSupport {
        var probe = dio_probe()
        _ = try Sys.ioUringRegister(fd, opcode: RegisterOpcode.registerProbe.rawValue, arg: &probe, count: 256)
        var supported = Set<UInt8>()
        withUnsafeBytes(of: &probe.ops) { raw in
            let ops = raw.bindMemory(to: dio_probe_op.self)
            for index in 0..<min(Int(probe.ops_len), ops.count) where ops[index].flags & UInt16(IO_URING_OP_SUPPORTED) != 0 {
                supported.insert(ops[index].op)
            }
        }
        return OpcodeSupport(lastOpcode: probe.last_op, supported: supported)
    }

    /// Registers an empty (sparse) fixed-buffer table of `count` slots
    /// (IORING_REGISTER_BUFFERS2 with IORING_RSRC_REGISTER_SPARSE, 5.19+). Slots are filled and
    /// emptied later with `updateBuffers`, without unregistering the rest.
    func registerSparseBuffers(count: UInt32) throws(Errno) {
        try registerSparse(.registerBuffers2, count: count)
    }

    /// Points slots `first ..< first + regions.count` of the fixed-buffer table at `regions`
    /// (IORING_REGISTER_BUFFERS_UPDATE). The kernel pins the pages and charges them to
    /// RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK; an empty region (nil, 0) clears a slot.
    ///
    /// All or nothing: when the kernel takes only some of the regions (the memlock limit ran out
    /// partway), the slots it did fill are cleared again and the error is thrown, so no slot of
    /// a pool is left pointing at memory while its neighbours point at nothing (a READ_FIXED on
    /// an empty slot fails with EFAULT).
    func updateBuffers(first: UInt32, regions: [iovec]) throws(Errno) {
        let done = try regions.withUnsafeBufferPointer { (vectors) throws(Errno) -> Int in
            try update(.updateBuffers, first: first, table: UnsafeRawPointer(vectors.baseAddress), count: vectors.count)
        }
        guard done < regions.count else { return }
        let empty = [iovec](repeating: iovec(iov_base: nil, iov_len: 0), count: done)
        // Clearing never pins anything, so it cannot run out of memlock.
        _ = try? empty.withUnsafeBufferPointer { (vectors) throws(Errno) -> Int in
            try update(.updateBuffers, first: first, table: UnsafeRawPointer(vectors.baseAddress), count: vectors.count)
        }
        throw .noMemory
    }

    /// Points slots `first ..< first + count` of this ring's fixed-buffer table at the buffers in
    /// slots `sourceFirst ..<` of ring `source`'s (IORING_REGISTER_CLONE_BUFFERS with
    /// DST_REPLACE, 6.13+). The rings then share the pinned pages: nothing is pinned or charged
    /// to RLIMIT_MEMLOCK again. The kernel refuses (EEXIST) when `source` is a SINGLE_ISSUER
    /// ring of another thread, hence a shared source ring that any thread may use.
    func cloneBuffers(from source: Int32, sourceFirst: UInt32, first: UInt32, count: UInt32) throws(Errno) {
        var request = dio_clone_buffers()
        request.src_fd = UInt32(bitPattern: source)
        request.flags = DIO_IORING_REGISTER_DST_REPLACE
        request.src_off = sourceFirst
        request.dst_off = first
        request.nr = count
        _ = try Sys.ioUringRegister(fd, opcode: RegisterOpcode.cloneBuffers.rawValue, arg: &request, count: 1)
    }

    /// Registers an empty (sparse) fixed-file table of `count` slots (IORING_REGISTER_FILES2
    /// with IORING_RSRC_REGISTER_SPARSE, 5.19+). A request naming a slot instead of a descriptor
    /// (IOSQE_FIXED_FILE) saves the kernel a file-table lookup and reference count per request,
    /// as fio's `registerfiles` does.
    func registerSparseFiles(count: UInt32) throws(Errno) {
        try registerSparse(.registerFiles2, count: count)
    }

    /// Points fixed-file slots `first ..< first + fds.count` at `fds` (-1 clears a slot)
    /// (IORING_REGISTER_FILES_UPDATE2). The table holds its own reference to each file.
    func updateFiles(first: UInt32, fds: [Int32]) throws(Errno) {
        let done = try fds.withUnsafeBufferPointer { (table) throws(Errno) -> Int in
            try update(.updateFiles2, first: first, table: UnsafeRawPointer(table.baseAddress), count: table.count)
        }
        // Callers update one slot at a time; a partial answer can only be "none of them".
        if done < fds.count { throw .badFileDescriptor }
    }

    /// A resource table of `count` empty slots (struct io_uring_rsrc_register).
    private func registerSparse(_ opcode: RegisterOpcode, count: UInt32) throws(Errno) {
        var request = dio_rsrc_register()
        request.nr = count
        request.flags = IORING_RSRC_REGISTER_SPARSE
        _ = try Sys.ioUringRegister(fd, opcode: opcode.rawValue, arg: &request, count: UInt32(MemoryLayout<dio_rsrc_register>.size))
    }

    /// Replaces `count` slots from `first` with the entries at `table` (struct io_uring_rsrc_update2).
    /// Returns how many slots, from `first`, the kernel updated: it stops at the first entry it
    /// cannot take (pinning past RLIMIT_MEMLOCK answers ENOMEM) and reports the count done, not
    /// the error, when that count is not zero. Callers must not assume the whole range changed.
    private func update(_ opcode: RegisterOpcode, first: UInt32, table: UnsafeRawPointer?, count: Int) throws(Errno) -> Int {
        var update = dio_rsrc_update2()
        update.offset = first
        update.data = UInt64(UInt(bitPattern: table))
        update.nr = UInt32(count)
        return try Sys.ioUringRegister(fd, opcode: opcode.rawValue, arg: &update, count: UInt32(MemoryLayout<dio_rsrc_update2>.size))
    }
}

/// The opcodes a kernel reported as supported by IORING_REGISTER_PROBE.
package struct OpcodeSupport: Sendable {
    /// The highest opcode number this kernel knows.
    package let lastOpcode: UInt8
    let supported: Set<UInt8>

    package func supports(_ opcode: Opcode) -> Bool { supported.contains(opcode.rawValue) }
    package func supports(rawOpcode: UInt8) -> Bool { supported.contains(rawOpcode) }
}
