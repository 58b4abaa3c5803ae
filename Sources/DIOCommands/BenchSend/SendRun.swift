import DirectIO
import Glibc

/// One send of the whole file over a fresh loopback connection.
enum SendRun {
    struct Result {
        var report: TransferReport
        var bytes: Int64
        var seconds: Double
        var cpuSeconds: Double
    }

    static func once(_ file: Int32, label: String, strategy: TransferStrategy) throws -> Result {
        let (sender, receiver) = try connectedPair()
        defer { close(sender) }
        let reader = DiscardingReader(receiver)
        let cpuBefore = cpuSeconds()
        let started = ProcessClock.nanoseconds()
        let report = try Transfer.run(from: TransferEndpoint(descriptor: file, label: label), to: TransferEndpoint(descriptor: sender, label: "loopback"),
                                      options: TransferOptions(strategy: strategy))
        shutdown(sender, Int32(SHUT_WR))
        let received = reader.join()
        let seconds = Double(ProcessClock.nanoseconds() - started) / 1e9
        guard received == report.bytes else {
            throw DirectIOError(.ioError, operation: "bench-send", detail: "sent \(report.bytes) bytes by \(strategy) but the reader got \(received)")
        }
        return Result(report: report, bytes: report.bytes, seconds: seconds, cpuSeconds: cpuSeconds() - cpuBefore)
    }

    private static func connectedPair() throws -> (Int32, Int32) {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let sender = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                bind(listener, raw, length) == 0 && listen(listener, 1) == 0 && getsockname(listener, raw, &length) == 0 && connect(sender, raw, length) == 0
            }
        }
        let receiver = ok ? accept(listener, nil, nil) : -1
        guard listener >= 0, sender >= 0, receiver >= 0 else {
            if sender >= 0 { close(sender) }
            throw DirectIOError.system(.init(rawValue: errno), operation: "bench-send", call: "socket/connect/accept", path: "127.0.0.1")
        }
        return (sender, receiver)
    }

    private static func cpuSeconds() -> Double {
        let cpu = ProcessClock.cpuSeconds()
        return cpu.user + cpu.system
    }
}

/// Reads a socket to EOF on its own thread, discarding the bytes, then closes it.
final class DiscardingReader {
    private var thread = pthread_t()
    private let state: UnsafeMutablePointer<(fd: Int32, bytes: Int64)>

    init(_ fd: Int32) {
        state = .allocate(capacity: 1)
        state.initialize(to: (fd, 0))
        pthread_create(&thread, nil, { raw in
            guard let state = raw?.assumingMemoryBound(to: (fd: Int32, bytes: Int64).self) else { return nil }
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            defer { buffer.deallocate() }
            while true {
                let count = read(state.pointee.fd, buffer, 1 << 20)
                if count <= 0 { break }
                state.pointee.bytes += Int64(count)
            }
            close(state.pointee.fd)
            return nil
        }, state)
    }

    /// Waits for EOF; returns the bytes read.
    func join() -> Int64 {
        pthread_join(thread, nil)
        let bytes = state.pointee.bytes
        state.deinitialize(count: 1)
        state.deallocate()
        return bytes
    }
}
