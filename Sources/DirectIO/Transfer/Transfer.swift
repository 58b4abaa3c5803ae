import CDirectIO
import Glibc
import Logging
import SystemPackage

/// Moves a byte range from one descriptor to another by the cheapest path the pair supports:
/// reflink, copy_file_range, splice, sendfile, SEND_ZC, an O_DIRECT pipeline, or, last,
/// buffered read/write. Each path that cannot serve the pair is skipped with its reason in
/// the report; a path that stops being able to serve it midway hands the rest to the next.
///
/// ```swift
/// let report = try Transfer.run(from: TransferEndpoint(descriptor: source, label: "a.db"),
///                               to: TransferEndpoint(descriptor: copy, label: "b.db"))
/// print(report.strategy, report.bytes, report.skipped)
/// ```
///
/// The caller keeps owning both descriptors. A transfer may move their file positions
/// (SEEK_DATA/SEEK_HOLE on the source, sendfile on a file destination).
public enum Transfer {
    /// - Parameters:
    ///   - source: where the bytes come from.
    ///   - sourceOffset: where the range starts in the source; ignored for sockets and pipes.
    ///   - destination: where they go.
    ///   - destinationOffset: where the range starts in the destination; ignored for sockets
    ///     and pipes.
    ///   - count: bytes to move; nil moves to the end of the source (its size for files and
    ///     block devices, end of stream for sockets and pipes).
    ///   - options: strategy, holes, buffers, progress, cancellation, logger.
    public static func run(from source: TransferEndpoint, sourceOffset: Int64 = 0, to destination: TransferEndpoint, destinationOffset: Int64 = 0,
                           count: Int64? = nil, options: TransferOptions = TransferOptions()) throws(DirectIOError) -> TransferReport {
        guard sourceOffset >= 0, destinationOffset >= 0, count.map({ $0 >= 0 }) ?? true else {
            throw DirectIOError(.invalidArgument, operation: "transfer", path: source.label, offset: min(sourceOffset, destinationOffset),
                                detail: "offsets and count must not be negative")
        }
        let started = Sys.monotonicNanoseconds()
        let sourceSize = try source.size()
        let total: Int64? = if let sourceSize { max(0, min(count ?? .max, sourceSize - sourceOffset)) } else { count }
        var report = TransferReport(strategy: options.strategy ?? .buffered, strategiesUsed: [], bytes: 0, userSpaceCopies: 0, skipped: [],
                                    holes: 0, holeBytes: 0, zeroCopySends: 0, zeroCopySendsCopied: 0, seconds: 0)

        // The candidates, in order, and why the others are out.
        var candidates: [TransferStrategy] = []
        for strategy in options.strategy.map({ [$0] }) ?? TransferStrategy.automaticOrder(from: source.kind, to: destination.kind) {
            if let why = strategy.unsuitability(from: source.kind, to: destination.kind) {
                report.skipped.append((strategy, why))
            } else {
                candidates.append(strategy)
            }
        }
        if let forced = options.strategy, candidates.isEmpty {
            throw DirectIOError(.unsupported, operation: "transfer (\(forced))", path: destination.label,
                                detail: report.skipped.first?.reason ?? "cannot serve \(source.kind) → \(destination.kind)")
        }
        if source.kind == .regularFile, let total, total > 0 {
            // The kernel paths read through the page cache front to back: a doubled readahead
            // window is what cp asks for too (advice only; failure changes nothing).
            _ = try? Sys.adviseSequential(source.descriptor, offset: sourceOffset, length: total)
        }
        var meter = TransferMeter(total: total, options: options, destination: destination.label)
        var run = Run(source: source, destination: destination, sourceSize: sourceSize, options: options)
        let range = TransferRange(sourceOffset: sourceOffset, destinationOffset: destinationOffset, count: total)

        if candidates.first == .reflink {
            // Cloning shares extents, holes included: the whole range in one call, or not at all.
            if let moved = try run.attempt(.reflink, range, meter: &meter, report: &report) {
                report.bytes = moved
                candidates.removeAll()
            } else {
                candidates.removeFirst()
            }
        }
        if !candidates.isEmpty && total != 0 {
            let pieces = try run.plan(range, report: &report)
            var moved: Int64 = 0
            for piece in pieces {
                var remaining = piece
                while true {
                    guard let strategy = candidates.first else {
                        throw DirectIOError(.unsupported, operation: "transfer", path: destination.label, offset: remaining.destinationOffset,
                                            detail: "no way to move bytes from \(source.label) (\(source.kind)) to \(destination.label) (\(destination.kind)): "
                                                + report.skipped.map { "\($0.strategy): \($0.reason)" }.joined(separator: "; "))
                    }
                    do {
                        let done = try run.path(for: strategy).move(remaining, meter: &meter)
                        moved += done
                        if strategy.copiesThroughUserSpace { report.userSpaceCopies += done }
                        if !report.strategiesUsed.contains(strategy) { report.strategiesUsed.append(strategy) }
                        break
                    } catch {
                        guard case .unsupported(let why, let done) = error else {
                            if case .failed(let failure) = error { throw failure }
                            break
                        }
                        moved += done
                        if strategy.copiesThroughUserSpace { report.userSpaceCopies += done }
                        remaining = remaining.advanced(by: done)
                        if done > 0 && !report.strategiesUsed.contains(strategy) { report.strategiesUsed.append(strategy) }
                        let midway = report.strategiesUsed.contains(strategy)
                        report.skipped.append((strategy, midway ? "stopped at source offset \(remaining.sourceOffset): \(why)" : why))
                        options.logger?.info("transfer path failed, falling back to the next", metadata: [
                            "directio.source": "\(source.label)", "directio.destination": "\(destination.label)", "directio.strategy": "\(strategy)",
                            "directio.offset": "\(remaining.sourceOffset)", "directio.reason": "\(why)"])
                        run.discard(strategy)
                        candidates.removeFirst()
                        if options.strategy != nil {
                            throw DirectIOError(.unsupported, operation: "transfer (\(strategy))", path: destination.label, offset: remaining.destinationOffset, detail: why)
                        }
                    }
                }
            }
            report.bytes = moved
            try run.finishSize(range, total: total)
        }
        report.strategy = report.strategiesUsed.last ?? candidates.first ?? report.strategy
        report.zeroCopySends = run.zeroCopy?.sends ?? 0
        report.zeroCopySendsCopied = run.zeroCopy?.sendsCopied ?? 0
        report.seconds = Double(Sys.monotonicNanoseconds() - started) / 1e9
        options.logger?.debug("transfer done", metadata: [
            "directio.source": "\(source.label)", "directio.destination": "\(destination.label)", "directio.bytes": "\(report.bytes)",
            "directio.strategies": "\(report.strategiesUsed.map { "\($0)" }.joined(separator: ","))",
            "directio.skipped": "\(report.skipped.map { "\($0.strategy): \($0.reason)" }.joined(separator: "; "))"])
        return report
    }
}

/// The state of one transfer: the paths made so far (each is set up once) and the sizes.
private struct Run {
    let source: TransferEndpoint
    let destination: TransferEndpoint
    let sourceSize: Int64?
    let options: TransferOptions
    private var paths: [TransferStrategy: any TransferPath] = [:]
    var zeroCopy: ZeroCopySendPath? { paths[.zeroCopySend] as? ZeroCopySendPath }

    init(source: TransferEndpoint, destination: TransferEndpoint, sourceSize: Int64?, options: TransferOptions) {
        self.source = source
        self.destination = destination
        self.sourceSize = sourceSize
        self.options = options
    }

    mutating func path(for strategy: TransferStrategy) throws(PathFailure) -> any TransferPath {
        if let path = paths[strategy] { return path }
        let path: any TransferPath = switch strategy {
        case .reflink: ReflinkPath(source: source, destination: destination, sourceSize: sourceSize ?? 0)
        case .copyRange: CopyRangePath(source: source, destination: destination)
        case .splice: try SplicePath(source: source, destination: destination)
        case .sendfile: SendfilePath(source: source, destination: destination)
        case .zeroCopySend: try ZeroCopySendPath(source: source, destination: destination, buffers: options.buffers, bufferBytes: options.bufferBytes)
        case .direct: try DirectPipelinePath(source: source, destination: destination, buffers: options.buffers, bufferBytes: options.bufferBytes)
        case .buffered: BufferedPath(source: source, destination: destination, bufferBytes: options.bufferBytes)
        }
        paths[strategy] = path
        return path
    }

    /// Drops a path that cannot serve the pair (closing its pipe, engine or files).
    mutating func discard(_ strategy: TransferStrategy) {
        paths[strategy] = nil
    }

    /// Runs `strategy` over the whole range: the bytes moved, or nil (with the reason in the
    /// report) when it cannot serve the pair.
    mutating func attempt(_ strategy: TransferStrategy, _ range: TransferRange, meter: inout TransferMeter, report: inout TransferReport) throws(DirectIOError) -> Int64? {
        do {
            let moved = try path(for: strategy).move(range, meter: &meter)
            report.strategiesUsed.append(strategy)
            return moved
        } catch {
            guard case .unsupported(let why, _) = error else {
                if case .failed(let failure) = error { throw failure }
                return nil
            }
            report.skipped.append((strategy, why))
            discard(strategy)
            if options.strategy != nil {
                throw DirectIOError(.unsupported, operation: "transfer (\(strategy))", path: destination.label, offset: range.destinationOffset, detail: why)
            }
            return nil
        }
    }

    /// The pieces of `range` to move. With holes kept, only the source's data extents; each
    /// hole that overlaps data the destination already had is punched, so it reads as zeros
    /// there too (a new or shorter destination needs nothing: past its end is a hole already).
    func plan(_ range: TransferRange, report: inout TransferReport) throws(DirectIOError) -> [TransferRange] {
        guard options.keepHoles, source.kind == .regularFile, destination.kind == .regularFile, let count = range.count, count > 0 else { return [range] }
        let end = range.sourceOffset + count
        let extents = DataExtents.of(source.descriptor, in: range.sourceOffset..<end)
        let shift = range.destinationOffset - range.sourceOffset
        let destinationSize = (try destination.size()) ?? 0
        var pieces: [TransferRange] = []
        var position = range.sourceOffset
        for extent in extents + [end..<end] {
            if extent.lowerBound > position {
                let hole = position..<extent.lowerBound
                report.holes += 1
                report.holeBytes += Int64(hole.count)
                if hole.lowerBound + shift < destinationSize {
                    do {
                        try Sys.fallocate(destination.descriptor, mode: DIO_FALLOC_FL_PUNCH_HOLE | DIO_FALLOC_FL_KEEP_SIZE, offset: hole.lowerBound + shift, length: Int64(hole.count))
                    } catch {
                        // No hole punching here: write the zeros instead.
                        pieces.append(TransferRange(sourceOffset: hole.lowerBound, destinationOffset: hole.lowerBound + shift, count: Int64(hole.count)))
                    }
                }
            }
            if !extent.isEmpty {
                pieces.append(TransferRange(sourceOffset: extent.lowerBound, destinationOffset: extent.lowerBound + shift, count: Int64(extent.count)))
            }
            position = max(position, extent.upperBound)
        }
        return pieces.sorted { $0.sourceOffset < $1.sourceOffset }
    }

    /// A range ending in a hole leaves the destination short: extend it to the range's end.
    func finishSize(_ range: TransferRange, total: Int64?) throws(DirectIOError) {
        guard destination.kind == .regularFile, let total else { return }
        let end = range.destinationOffset + total
        if (try destination.size() ?? 0) < end {
            do { try Sys.ftruncate(destination.descriptor, end) } catch {
                throw .system(error, operation: "transfer", call: "ftruncate", path: destination.label, offset: end)
            }
        }
    }
}
