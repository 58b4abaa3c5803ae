import CoreMetrics

/// Publishes an engine's statistics through swift-metrics (`IOEngine.publishMetrics`), named
/// as the server ecosystem names them: dotted labels, each with fixed dimensions (`engine`,
/// and what is counted where one label has several kinds), all made once:
///
/// | label | dimensions |
/// | --- | --- |
/// | `directio.requests` | `engine`, `event`: `submitted`, `completed`, `retried` (EAGAIN/EINTR), `resubmitted` (short transfers) |
/// | `directio.requests.fixed` | `engine`, `resource`: `buffer` (READ/WRITE_FIXED), `file` (fixed-file slot) |
/// | `directio.bytes` | `engine`, `path`: `direct`, `bounced`, `shifted` |
/// | `directio.read_modify_write.blocks` | `engine` |
/// | `directio.bounce.waits` | `engine` |
/// | `directio.fallbacks` | `engine`, `to`: `buffered` (files opened `.preferred` without O_DIRECT) |
///
/// The engine counts in plain integers on its hot path; `publish()` adds what changed since
/// the last call to the counters, so the metrics backend costs nothing per I/O.
final class EngineMetrics {
    private var published = EngineStatistics()
    private let counters: [(KeyPath<EngineStatistics, Int>, Counter)]

    /// - Parameters:
    ///   - label: the value of the `engine` dimension, e.g. "storage".
    ///   - factory: the metrics backend; by default the one bootstrapped in `MetricsSystem`.
    init(label: String, factory: any MetricsFactory) {
        let engine = ("engine", label)
        let names: [(KeyPath<EngineStatistics, Int>, String, [(String, String)])] = [
            (\.submitted, "directio.requests", [engine, ("event", "submitted")]),
            (\.completions, "directio.requests", [engine, ("event", "completed")]),
            (\.retries, "directio.requests", [engine, ("event", "retried")]),
            (\.resubmissions, "directio.requests", [engine, ("event", "resubmitted")]),
            (\.systemCallRequests, "directio.requests", [engine, ("event", "system_call")]),
            (\.fixedBufferRequests, "directio.requests.fixed", [engine, ("resource", "buffer")]),
            (\.fixedFileRequests, "directio.requests.fixed", [engine, ("resource", "file")]),
            (\.transfers.bytesDirect, "directio.bytes", [engine, ("path", "direct")]),
            (\.transfers.bytesBounced, "directio.bytes", [engine, ("path", "bounced")]),
            (\.transfers.bytesShifted, "directio.bytes", [engine, ("path", "shifted")]),
            (\.transfers.readModifyWriteBlocks, "directio.read_modify_write.blocks", [engine]),
            (\.transfers.bounceWaits, "directio.bounce.waits", [engine]),
            (\.bufferedFallbacks, "directio.fallbacks", [engine, ("to", "buffered")]),
        ]
        counters = names.map { ($0.0, Counter(label: $0.1, dimensions: $0.2, factory: factory)) }
    }

    /// Adds the engine's counts since the last call to the counters.
    func publish(_ current: EngineStatistics) {
        for (path, counter) in counters {
            let delta = current[keyPath: path] - published[keyPath: path]
            if delta > 0 { counter.increment(by: delta) }
        }
        published = current
    }
}
