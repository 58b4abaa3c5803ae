import CDirectIO
import SystemPackage
import Glibc

/// splice: page references move from the source into a pipe and from the pipe to the
/// destination, never through user memory. A pipe endpoint is spliced directly; otherwise the
/// path owns a pipe, grown with F_SETPIPE_SZ so each round trip moves up to 1 MiB.
final class SplicePath: TransferPath {
    let strategy = TransferStrategy.splice
    private let source: TransferEndpoint
    private let destination: TransferEndpoint
    /// The path's own pipe, when neither endpoint is one.
    private let pipe: (read: Int32, write: Int32)?
    private let pipeBytes: Int

    static let wantedPipeBytes: Int32 = 1 << 20
    static let moveFlags: UInt32 = 1 | 4  // SPLICE_F_MOVE | SPLICE_F_MORE

    init(source: TransferEndpoint, destination: TransferEndpoint) throws(PathFailure) {
        self.source = source
        self.destination = destination
        if source.kind == .pipe || destination.kind == .pipe {
            pipe = nil
            pipeBytes = Int(Self.wantedPipeBytes)
            return
        }
        let created: (read: Int32, write: Int32)
        do { created = try Sys.pipe() } catch {
            throw .failed(.system(error, operation: "transfer (splice)", call: "pipe2", path: destination.label))
        }
        // Growing the pipe may be refused above /proc/sys/fs/pipe-max-size for unprivileged
        // users; the default 64 KiB pipe still works, with more system calls.
        _ = try? Sys.fcntl(created.write, DIO_F_SETPIPE_SZ, Self.wantedPipeBytes)
        pipeBytes = Int((try? Sys.fcntl(created.write, DIO_F_GETPIPE_SZ, 0)) ?? 65536)
        pipe = created
    }

    deinit {
        if let pipe {
            _ = try? Sys.close(pipe.read)
            _ = try? Sys.close(pipe.write)
        }
    }

    func move(_ range: TransferRange, meter: inout TransferMeter) throws(PathFailure) -> Int64 {
        var sourceOffset = range.sourceOffset
        var destinationOffset = range.destinationOffset
        var moved: Int64 = 0
        while range.count.map({ moved < $0 }) ?? true {
            let wanted = range.chunk(after: moved, limit: pipeBytes)
            let spliced: Int
            if let pipe {
                let filled = try splice(from: source, at: &sourceOffset, to: pipe.write, count: wanted, moved: moved, range: range)
                if filled == 0 { break }
                // Drain what entered the pipe. If the destination refuses now, those bytes
                // are still in the source (when it is a file) for the next path to move.
                var drained = 0
                while drained < filled {
                    drained += try splice(from: pipe.read, to: destination, at: &destinationOffset, count: filled - drained, moved: moved + Int64(drained), range: range)
                }
                spliced = filled
            } else {
                spliced = try splice(from: source, at: &sourceOffset, to: destination, at: &destinationOffset, count: wanted, moved: moved, range: range)
                if spliced == 0 { break }
            }
            moved += Int64(spliced)
            try meter.moved(Int64(spliced), reaching: range.destinationOffset + moved)
        }
        return moved
    }

    /// Source → pipe.
    private func splice(from source: TransferEndpoint, at offset: inout Int64, to pipe: Int32, count: Int, moved: Int64, range: TransferRange) throws(PathFailure) -> Int {
        do {
            return try withOffset(of: source, &offset) { sourceOffset throws(Errno) in
                try Sys.splice(from: source.descriptor, at: sourceOffset, to: pipe, at: nil, count: count, flags: Self.moveFlags)
            }
        } catch {
            throw failure(error, moved: moved, range: range, reading: true)
        }
    }

    /// Pipe → destination.
    private func splice(from pipe: Int32, to destination: TransferEndpoint, at offset: inout Int64, count: Int, moved: Int64, range: TransferRange) throws(PathFailure) -> Int {
        do {
            return try withOffset(of: destination, &offset) { destinationOffset throws(Errno) in
                try Sys.splice(from: pipe, at: nil, to: destination.descriptor, at: destinationOffset, count: count, flags: Self.moveFlags)
            }
        } catch {
            // From a file, the bytes still in the pipe can be read again by the next path (the
            // pipe goes with this one). From a stream they exist nowhere else: no fallback.
            if source.kind.isSeekable { throw failure(error, moved: moved, range: range, reading: false) }
            throw .failed(.system(error, operation: "transfer (splice)", call: "splice", path: destination.label, offset: range.destinationOffset + moved))
        }
    }

    /// Source → destination when one of them is a pipe.
    private func splice(from source: TransferEndpoint, at sourceOffset: inout Int64, to destination: TransferEndpoint, at destinationOffset: inout Int64, count: Int, moved: Int64, range: TransferRange) throws(PathFailure) -> Int {
        do {
            return try withOffset(of: source, &sourceOffset) { sourcePointer throws(Errno) in
                try withOffset(of: destination, &destinationOffset) { destinationPointer throws(Errno) in
                    try Sys.splice(from: source.descriptor, at: sourcePointer, to: destination.descriptor, at: destinationPointer, count: count, flags: Self.moveFlags)
                }
            }
        } catch {
            throw failure(error, moved: moved, range: range, reading: false)
        }
    }

    /// Passes a pointer to `offset` for files and block devices, nil for streams.
    private func withOffset(of endpoint: TransferEndpoint, _ offset: inout Int64, _ body: (UnsafeMutablePointer<Int64>?) throws(Errno) -> Int) throws(Errno) -> Int {
        guard endpoint.kind.isSeekable else { return try body(nil) }
        return try body(&offset)
    }

    private func failure(_ error: Errno, moved: Int64, range: TransferRange, reading: Bool) -> PathFailure {
        PathFailure.from(error, call: "splice", moved: moved, strategy: strategy, destination: reading ? source.label : destination.label,
                         offset: reading ? range.sourceOffset + moved : range.destinationOffset + moved,
                         detail: reading ? "reading from \(source.label) into a pipe" : "writing to \(destination.label) from a pipe")
    }
}
