import ArgumentParser
import DirectIO
import Glibc

/// `dio bench-send`: file → socket over loopback, every send path side by side in one run.
public struct BenchSend: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bench-send",
        abstract: "Send a file over a loopback TCP connection by each path (sendfile, splice, SEND_ZC, read+write) and compare.",
        discussion: """
            Each round sends the whole file by every strategy, in rotating order, to a reader \
            thread that discards the bytes. Reports throughput and CPU seconds per GiB (user + \
            system of the whole process, reader included, so the paths are charged alike). An untimed \
            pass first brings the file into the page cache; send-zc reads it with O_DIRECT \
            regardless.

            Example: dio bench-send /data/video.mp4 --json
            """)

    public init() {}

    @Argument(help: "The file to send (default: a new temporary file of --size).")
    var path: String?

    @Option(help: "Size of the temporary file.")
    var size: ByteCount = ByteCount(1 << 30)

    @Option(help: "Rounds (each strategy once per round).")
    var rounds: Int = 3

    @Option(parsing: .upToNextOption, help: "Strategies to compare.")
    var strategies: [String] = ["sendfile", "splice", "send-zc", "buffered"]

    @Flag(help: "Print one JSON object per strategy and round.")
    var json = false

    public func validate() throws {
        for name in strategies where !["sendfile", "splice", "send-zc", "buffered"].contains(name) {
            throw ValidationError("unknown strategy \(name): use sendfile, splice, send-zc or buffered")
        }
        if rounds < 1 { throw ValidationError("--rounds must be at least 1") }
    }

    public func run() throws {
        let target = try BenchTarget.prepare(path: path, sizeBytes: path == nil ? Int64(size.bytes) : nil, defaultSize: Int64(size.bytes), seed: 7) { message in
            if !json { print(message) }
        }
        let descriptor = open(target.path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw DirectIOError.system(.init(rawValue: errno), operation: "bench-send", call: "open", path: target.displayName) }
        defer { close(descriptor) }
        // An untimed buffered pass first brings the file into the page cache, so no path pays
        // for the first reads from disk (send-zc reads with O_DIRECT whatever the cache holds).
        _ = try SendRun.once(descriptor, label: target.displayName, strategy: .buffered)
        var totals: [String: (seconds: Double, cpu: Double, bytes: Int64)] = [:]
        for round in 0..<rounds {
            for index in strategies.indices {
                let name = strategies[(index + round) % strategies.count]
                let strategy = TransferStrategy(rawValue: name) ?? .buffered
                let result = try SendRun.once(descriptor, label: target.displayName, strategy: strategy)
                totals[name, default: (0, 0, 0)].seconds += result.seconds
                totals[name, default: (0, 0, 0)].cpu += result.cpuSeconds
                totals[name, default: (0, 0, 0)].bytes += result.bytes
                if json {
                    print(JSON.object([
                        ("strategy", .string(name)), ("round", .int(round)), ("bytes", .int(Int(result.bytes))),
                        ("seconds", .double(result.seconds)), ("bytesPerSecond", .double(Double(result.bytes) / result.seconds)),
                        ("cpuSecondsPerGiB", .double(result.cpuSeconds / (Double(result.bytes) / Double(1 << 30)))),
                        ("zeroCopySends", .int(result.report.zeroCopySends)), ("zeroCopySendsCopied", .int(result.report.zeroCopySendsCopied)),
                    ]).rendered)
                }
            }
        }
        guard !json else { return }
        print("file → loopback TCP, \(target.sizeBytes) bytes, \(rounds) rounds")
        print("strategy     MiB/s   CPU s/GiB")
        for name in strategies {
            guard let total = totals[name] else { continue }
            let rate = Double(total.bytes) / total.seconds / Double(1 << 20)
            let cpu = total.cpu / (Double(total.bytes) / Double(1 << 30))
            print(name + String(repeating: " ", count: max(0, 10 - name.count)) + Decimal.fixed(rate, 0).leftPadded(8) + Decimal.fixed(cpu, 3).leftPadded(12))
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
