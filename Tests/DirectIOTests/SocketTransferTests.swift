import Foundation
import Glibc
import Testing
@testable import DirectIO

/// A connected TCP pair over loopback: `sender` and `receiver` descriptors.
struct LoopbackConnection {
    let sender: Int32
    let receiver: Int32

    static func open() throws -> LoopbackConnection {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(listener >= 0)
        defer { Glibc.close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                try #require(bind(listener, raw, length) == 0)
                try #require(listen(listener, 1) == 0)
                try #require(getsockname(listener, raw, &length) == 0)
            }
        }
        let sender = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(sender >= 0)
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(sender, $0, length) }
        }
        try #require(connected == 0, "connect: errno \(errno)")
        let receiver = accept(listener, nil, nil)
        try #require(receiver >= 0)
        return LoopbackConnection(sender: sender, receiver: receiver)
    }

    func close() {
        Glibc.close(sender)
        Glibc.close(receiver)
    }
}

/// Reads a descriptor to EOF on another thread.
final class Drain: @unchecked Sendable {
    // Unchecked: `bytes` is written by the draining thread only, and read after `join`.
    private var bytes: [UInt8] = []
    private let done = DispatchSemaphore(value: 0)

    init(_ fd: Int32) {
        // The thread holds this object until it has read to EOF; nothing holds the thread.
        let thread = Thread { [self] in
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count <= 0 { break }
                bytes += chunk[0..<count]
            }
            done.signal()
        }
        thread.start()
    }

    func join() -> [UInt8] {
        done.wait()
        return bytes
    }
}

/// Writes bytes to a descriptor on another thread, then closes it.
func feed(_ fd: Int32, _ bytes: [UInt8]) -> DispatchSemaphore {
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            written += count
        }
        close(fd)
        done.signal()
    }
    thread.start()
    return done
}

@Suite struct SocketTransferTests {
    @Test(arguments: [nil, TransferStrategy.sendfile, .splice, .zeroCopySend, .buffered])
    func fileToSocketOverLoopback(strategy: TransferStrategy?) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        for size in [0, 4095, (3 << 20) + 777] {
            let path = directory + "/f"
            let bytes = try TransferFixture.makeFile(path, size: size, seed: UInt64(size))
            let connection = try LoopbackConnection.open()
            let drain = Drain(connection.receiver)
            let input = open(path, O_RDONLY)
            defer { close(input) }
            let report: TransferReport
            do {
                report = try Transfer.run(from: TransferEndpoint(descriptor: input, label: path), to: TransferEndpoint(descriptor: connection.sender, label: "loopback"),
                                          options: TransferOptions(strategy: strategy, buffers: 4, bufferBytes: 256 << 10))
            } catch {
                shutdown(connection.sender, Int32(SHUT_WR))
                _ = drain.join()
                connection.close()
                // A forced SEND_ZC names RLIMIT_MEMLOCK when the limit refuses its pinned pages.
                if strategy == .zeroCopySend { try TestSupport.skipIfMemlockRefused(error, "SEND_ZC (its pages are charged to RLIMIT_MEMLOCK)") }
                throw error
            }
            shutdown(connection.sender, Int32(SHUT_WR))
            let received = drain.join()
            connection.close()
            #expect(report.bytes == Int64(size))
            #expect(report.strategy == strategy ?? .sendfile)
            #expect(report.userSpaceCopies == (report.strategy == .buffered ? Int64(size) : 0))
            TestSupport.expectSameBytes(received, bytes, "\(report.strategy) file → socket, \(size) bytes")
            if strategy == .zeroCopySend {
                // One send per 256 KiB buffer; over loopback the kernel copies every one and
                // says so in the notification (REPORT_USAGE).
                #expect(report.zeroCopySends >= (size + (256 << 10) - 1) / (256 << 10))
                #expect(report.zeroCopySendsCopied == report.zeroCopySends)
            }
        }
    }

    @Test(arguments: [nil, TransferStrategy.splice, .buffered])
    func socketAndPipeToFile(strategy: TransferStrategy?) throws {
        let directory = try TestSupport.scratchDirectory()
        defer { TestSupport.remove(directory) }
        let bytes = TestSupport.pattern(count: (2 << 20) + 5, seed: 42)
        // socket → file
        let connection = try LoopbackConnection.open()
        let fed = feed(connection.sender, bytes)
        let path = directory + "/from-socket"
        let output = open(path, O_RDWR | O_CREAT, 0o644)
        defer { close(output) }
        let report = try Transfer.run(from: TransferEndpoint(descriptor: connection.receiver, label: "loopback"), to: TransferEndpoint(descriptor: output, label: path),
                                      options: TransferOptions(strategy: strategy))
        fed.wait()
        close(connection.receiver)
        #expect(report.strategy == strategy ?? .splice)
        #expect(report.bytes == Int64(bytes.count))
        TestSupport.expectSameBytes(try TestSupport.referenceRead(path, count: bytes.count + 1), bytes, "socket → file")
        // pipe → file
        var fds: [Int32] = [-1, -1]
        try #require(pipe(&fds) == 0)
        let pipeFed = feed(fds[1], bytes)
        let pipePath = directory + "/from-pipe"
        let pipeOutput = open(pipePath, O_RDWR | O_CREAT, 0o644)
        defer { close(pipeOutput) }
        let pipeReport = try Transfer.run(from: TransferEndpoint(descriptor: fds[0]), to: TransferEndpoint(descriptor: pipeOutput, label: pipePath), options: TransferOptions(strategy: strategy))
        pipeFed.wait()
        close(fds[0])
        #expect(pipeReport.bytes == Int64(bytes.count))
        TestSupport.expectSameBytes(try TestSupport.referenceRead(pipePath, count: bytes.count + 1), bytes, "pipe → file")
    }
}
