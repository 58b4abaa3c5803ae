import DirectIO
import Glibc
import Synchronization

/// A one-line progress bar on standard error, redrawn at most ten times a second.
final class ProgressBar: Sendable {
    private let started = ProgressBar.now()
    private let lastDraw = Atomic<UInt64>(0)

    func update(_ done: Int64, _ total: Int64?) {
        let now = Self.now()
        guard now - lastDraw.load(ordering: .relaxed) >= 100_000_000 || done == total else { return }
        lastDraw.store(now, ordering: .relaxed)
        let seconds = Double(now - started) / 1e9
        let rate = seconds > 0 ? Double(done) / seconds : 0
        var line = "\r"
        if let total, total > 0 {
            let fraction = min(1, Double(done) / Double(total))
            let filled = Int(fraction * 30)
            line += "[" + String(repeating: "#", count: filled) + String(repeating: " ", count: 30 - filled) + "] "
            line += "\(Decimal.fixed(fraction * 100, 0))%  \(Self.format(done)) / \(Self.format(total))"
        } else {
            line += Self.format(done)
        }
        line += "  " + Self.format(Int64(rate)) + "/s   "
        FileHandleStandardError.write(line)
    }

    func finish() { FileHandleStandardError.write("\n") }

    static func format(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : "\(Decimal.fixed(value, 1)) \(units[unit])"
    }

    private static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
