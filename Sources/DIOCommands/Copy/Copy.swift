import ArgumentParser
import Dispatch
import DirectIO
import Glibc

/// `dio copy SRC DST`: the cheapest copy the pair of files allows, never a partial DST.
public struct Copy: ParsableCommand {
    public static let configuration = CommandConfiguration(
        abstract: "Copy a file by the cheapest path that works, never leaving a partial destination.",
        discussion: """
            auto tries reflink (xfs, btrfs: no data moves), then copy_file_range, splice, \
            sendfile, an O_DIRECT pipeline and, last, buffered read/write, and says why it \
            skipped each. The copy is written to a temporary file beside DST, synced, checked \
            (--verify), then renamed over DST: an interrupted copy (Ctrl-C, kill -9, a full \
            disk) leaves DST as it was. Mode, size and holes are kept. --strategy direct keeps \
            the page cache out of huge copies.

            Example: dio copy /data/table.db /backup/table.db
            """)

    public init() {}

    @Argument(help: "The file to copy.")
    var source: String

    @Argument(help: "The copy's path, a directory to copy into, or a block device (written in place).")
    var destination: String

    @Option(help: "auto, reflink, copy-range, splice, sendfile, direct or buffered.")
    var strategy: StrategyArgument = .auto

    @Flag(help: "Compare CRC-32C checksums of source and copy before the copy replaces DST.")
    var verify = false

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "Buffers in flight for --strategy direct.")
    var buffers: Int = 8

    @Option(help: "Bytes per buffer for --strategy direct.")
    var bufferSize: ByteCount = ByteCount(1 << 20)

    public enum StrategyArgument: String, ExpressibleByArgument, CaseIterable, Sendable {
        case auto, reflink, copyRange = "copy-range", splice, sendfile, direct, buffered

        var strategy: TransferStrategy? { self == .auto ? nil : TransferStrategy(rawValue: rawValue) }
    }

    public func validate() throws {
        if buffers < 1 || buffers > 1024 { throw ValidationError("--buffers must be between 1 and 1024") }
        if bufferSize.bytes < 4096 || bufferSize.bytes > 64 << 20 { throw ValidationError("--buffer-size must be between 4k and 64m") }
    }

    public func run() throws {
        let cancellation = TransferCancellation()
        let signals = SignalCancellation(cancellation)
        defer { signals.restore() }
        let bar = !json && isatty(STDERR_FILENO) == 1 ? ProgressBar() : nil
        var options = TransferOptions(strategy: strategy.strategy, buffers: buffers, bufferBytes: bufferSize.bytes, cancellation: cancellation)
        if let bar { options.progress = { done, total in bar.update(done, total) } }
        var checksums: (source: UInt32, copy: UInt32)? = nil
        let report: TransferReport
        do {
            report = try Transfer.copyFile(from: source, to: destination, options: options) { (sourceFD: Int32, copyFD: Int32) throws(DirectIOError) in
                guard verify else { return }
                let sums = (try FileChecksum.crc32c(of: sourceFD, label: source), try FileChecksum.crc32c(of: copyFD, label: destination))
                checksums = sums
                if sums.0 != sums.1 {
                    throw DirectIOError(.ioError, operation: "verify copy", path: destination,
                                        detail: "CRC-32C of the copy is \(hex(sums.1)), of \(source) \(hex(sums.0))")
                }
            }
        } catch {
            bar?.finish()
            var message = "dio copy: \(error)"
            if error.code == .cancelled { message = "dio copy: interrupted; " + (error.detail ?? "the copy was cut short") }
            if error.code == .noSpace, let offset = error.offset {
                message = "dio copy: no space left on device writing \(error.path ?? destination) at offset \(offset)"
            }
            printError(message + "; nothing was replaced")
            throw ExitCode(error.code == .cancelled ? 130 : 1)
        }
        bar?.finish()
        let transfer = report
        if json {
            var pairs: [(String, JSON)] = [
                ("source", .string(source)), ("destination", .string(report.destination ?? destination)),
                ("strategy", .string(transfer.strategy.rawValue)), ("bytes", .int(Int(transfer.bytes))),
                ("seconds", .double(transfer.seconds)), ("bytesPerSecond", .double(transfer.bytesPerSecond)),
                ("userSpaceCopies", .int(Int(transfer.userSpaceCopies))),
                ("skipped", .array(transfer.skipped.map { .object([("strategy", .string($0.strategy.rawValue)), ("reason", .string($0.reason))]) })),
                ("holes", .int(transfer.holes)), ("holeBytes", .int(Int(transfer.holeBytes))),
                ("replacedExisting", .bool(report.replacedExisting)), ("inPlace", .bool(report.inPlace)),
                ("verified", .bool(checksums != nil)),
            ]
            if let checksums { pairs.append(("crc32c", .string(hex(checksums.copy)))) }
            print(JSON.object(pairs).rendered)
            return
        }
        let rate = transfer.bytesPerSecond / Double(1 << 20)
        print("\(source) → \(report.destination ?? destination): \(transfer.bytes) bytes by \(transfer.strategy) in \(Decimal.fixed(transfer.seconds, 3)) s (\(Decimal.fixed(rate, 0)) MiB/s), \(transfer.userSpaceCopies) bytes through user space")
        for skipped in transfer.skipped { print("  skipped \(skipped.strategy): \(skipped.reason)") }
        if transfer.holes > 0 { print("  kept \(transfer.holes) holes (\(transfer.holeBytes) bytes)") }
        if let checksums { print("  verified: CRC-32C \(hex(checksums.copy)) on both sides") }
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 8 - digits.count) + digits
}

func printError(_ message: String) {
    FileHandleStandardError.write(message + "\n")
}

/// Standard error, unbuffered.
enum FileHandleStandardError {
    static func write(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(STDERR_FILENO, bytes.baseAddress.map { $0 + offset }, bytes.count - offset)
                if written <= 0 { return }
                offset += written
            }
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP cancel the copy (which then removes its temporary file)
/// instead of killing the process mid-write. The handlers run on a Dispatch queue, not in
/// signal context.
final class SignalCancellation {
    private let sources: [any DispatchSourceSignal]
    private static let signals = [SIGINT, SIGTERM, SIGHUP]

    init(_ cancellation: TransferCancellation) {
        sources = Self.signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { cancellation.cancel() }
            source.resume()
            return source
        }
    }

    func restore() {
        for source in sources { source.cancel() }
        for number in Self.signals { signal(number, SIG_DFL) }
    }
}

/// Fixed-point formatting without Foundation.
enum Decimal {
    /// `value` with `digits` digits after the point, rounded.
    static func fixed(_ value: Double, _ digits: Int) -> String {
        guard value.isFinite else { return "-" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = Int64((abs(value) * scale).rounded())
        let sign = value < 0 && scaled != 0 ? "-" : ""
        guard digits > 0 else { return sign + String(scaled) }
        let whole = scaled / Int64(scale)
        let fraction = String(scaled % Int64(scale))
        return sign + "\(whole)." + String(repeating: "0", count: digits - fraction.count) + fraction
    }
}
