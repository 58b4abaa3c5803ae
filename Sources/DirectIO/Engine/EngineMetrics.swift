import CoreMetrics

/// Publishes an engine's statistics through swift-metrics (`IOEngine.publishMetrics`), as
/// counters labelled `directio_<name>` with an `engine` dimension.
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
        let dimensions = [("engine", label)]
        let names: [(KeyPath<EngineStatistics, Int>, String)] = [
            (\.submitted, "directio_requests_submitted"),
            (\.completions, "directio_completions"),
            (\.retries, "directio_retries"),
            (\.resubmissions, "directio_resubmissions"),
            (\.fixedBufferRequests, "directio_fixed_buffer_requests"),
            (\.fixedFileRequests, "directio_fixed_file_requests"),
            (\.transfers.bytesDirect, "directio_bytes_direct"),
            (\.transfers.bytesBounced, "directio_bytes_bounced"),
            (\.transfers.bytesShifted, "directio_bytes_shifted"),
            (\.transfers.readModifyWriteBlocks, "directio_read_modify_write_blocks"),
            (\.transfers.bounceWaits, "directio_bounce_waits"),
            (\.bufferedFallbacks, "directio_buffered_fallbacks"),
        ]
        counters = names.map { ($0.0, Counter(label: $0.1, dimensions: dimensions, factory: factory)) }
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
