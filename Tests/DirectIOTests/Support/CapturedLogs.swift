import Logging
import Synchronization

/// A swift-log backend that keeps what is logged, for tests of what DirectIO says.
final class CapturedLogs: Sendable {
    struct Entry: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    let entries = Mutex<[Entry]>([])

    /// A logger whose entries land here, at every level.
    func logger(_ label: String = "test") -> Logger {
        var logger = Logger(label: label) { _ in Handler(captured: self) }
        logger.logLevel = .trace
        return logger
    }

    func matching(_ message: String) -> [Entry] {
        entries.withLock { $0.filter { $0.message.contains(message) } }
    }

    private struct Handler: LogHandler {
        let captured: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            captured.entries.withLock {
                $0.append(Entry(level: event.level, message: "\(event.message)", metadata: all.mapValues { "\($0)" }))
            }
        }
    }
}
