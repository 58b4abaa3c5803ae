/// What carries a caller's requests to the kernel, so an error names the call that failed.
package enum RequestCarrier: Sendable {
    /// Blocking system calls (the blocking engine, the in-memory device).
    case systemCalls
    /// The ring, for every request (batched and async requests).
    case ring
    /// A synchronous caller on a ring engine: reads through the ring, writes, syncs and
    /// allocations as system calls on its thread (`RingBackend.enqueueWaited`).
    case ringWaited

    /// How an engine of `kind` carries requests its caller waits for (`waited`) or not.
    package init(_ kind: EngineKind, waited: Bool) {
        switch kind {
        case .ioUring: self = waited ? .ringWaited : .ring
        case .blocking, .memory: self = .systemCalls
        }
    }

    /// The io_uring opcode or the system call that carries `opcode`.
    package func name(of opcode: Opcode, dataOnly: Bool = false, rwFlags: Int32 = 0) -> String {
        switch self {
        case .ring: opcode.description
        case .ringWaited where !opcode.runsAsSystemCallWhenWaited: opcode.description
        case .systemCalls, .ringWaited: BlockingBackend.systemCallName(of: opcode, dataOnly: dataOnly, rwFlags: rwFlags)
        }
    }

    package func name(of operation: IOOperation) -> String {
        name(of: operation.opcode, dataOnly: operation.dataOnly, rwFlags: operation.rwFlags)
    }
}
