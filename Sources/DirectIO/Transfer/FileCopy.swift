import CDirectIO
import Glibc
import SystemPackage

extension Transfer {
    /// Copies the file at `sourcePath` to `destinationPath` so that the destination is never
    /// partial: the copy goes to a temporary file in the destination's directory (an unnamed
    /// O_TMPFILE where the filesystem has it, which even SIGKILL cannot leave behind), is
    /// synced, checked by `beforePublishing` if given, and only then renamed over the
    /// destination, whose directory is synced too. Any failure, cancellation included, leaves
    /// the destination as it was. The copy gets the source's permission bits and size, holes
    /// included.
    ///
    /// A block device destination is written in place.
    /// - Parameters:
    ///   - sourcePath: the file to copy.
    ///   - destinationPath: where the copy goes (replaced whole, or not at all).
    ///   - options: strategy, holes, buffers, progress, cancellation, logger.
    ///   - check: called with the source's and the finished copy's descriptors before the
    ///     copy replaces anything (e.g. to compare checksums).
    public static func copyFile(from sourcePath: String, to destinationPath: String, options: TransferOptions = TransferOptions(),
                                beforePublishing check: ((_ source: Int32, _ copy: Int32) throws(DirectIOError) -> Void)? = nil) throws(DirectIOError) -> TransferReport {
        let source: Int32
        do { source = try Sys.open(sourcePath, flags: O_RDONLY | O_CLOEXEC) } catch {
            throw .system(error, operation: "copy", call: "open", path: sourcePath)
        }
        defer { _ = try? Sys.close(source) }
        let sourceInfo: stat
        do { sourceInfo = try Sys.fstat(source) } catch { throw .system(error, operation: "copy", call: "fstat", path: sourcePath) }
        if sourceInfo.st_mode & S_IFMT == S_IFDIR {
            throw DirectIOError(.isDirectory, operation: "copy", path: sourcePath, detail: "copying directories is not supported; copy the files in it")
        }

        var destination = destinationPath
        var found = try? Sys.status(ofPath: destination)
        if let directory = found, directory.st_mode & S_IFMT == S_IFDIR {
            destination = (destination.hasSuffix("/") ? destination : destination + "/") + Self.lastComponent(of: sourcePath)
            found = try? Sys.status(ofPath: destination)
        }
        let exists = found != nil
        let existing = found ?? stat()
        if exists && existing.st_dev == sourceInfo.st_dev && existing.st_ino == sourceInfo.st_ino {
            throw DirectIOError(.invalidArgument, operation: "copy", path: destination, detail: "\(sourcePath) and \(destination) are the same file")
        }
        let sourceEndpoint = try TransferEndpoint(descriptor: source, label: sourcePath)

        if exists && existing.st_mode & S_IFMT == S_IFBLK {
            let device: Int32
            do { device = try Sys.open(destination, flags: O_WRONLY | O_CLOEXEC) } catch {
                throw .system(error, operation: "copy", call: "open", path: destination)
            }
            defer { _ = try? Sys.close(device) }
            let report = try run(from: sourceEndpoint, to: TransferEndpoint(descriptor: device, label: destination), options: options)
            do { try Sys.fsync(device, dataOnly: false) } catch { throw .system(error, operation: "copy", call: "fsync", path: destination) }
            try check?(source, device)
            var copied = report
            copied.destination = destination
            copied.replacedExisting = true
            copied.inPlace = true
            return copied
        }

        var temporary = try TemporaryFile(beside: destination)
        do throws(DirectIOError) {
            let report = try run(from: sourceEndpoint, to: TransferEndpoint(descriptor: temporary.fd, label: destination), options: options)
            do {
                try Sys.fchmod(temporary.fd, sourceInfo.st_mode & 0o7777)
                try Sys.fsync(temporary.fd, dataOnly: false)
            } catch {
                throw DirectIOError.system(error, operation: "copy", call: "fchmod/fsync", path: destination)
            }
            try check?(source, temporary.fd)
            try temporary.publish(as: destination)
            var copied = report
            copied.destination = destination
            copied.replacedExisting = exists
            return copied
        } catch {
            temporary.discard()
            throw error
        }
    }

    static func lastComponent(of path: String) -> String {
        let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
        return trimmed.split(separator: "/").last.map(String.init) ?? trimmed
    }
}

/// A file that becomes visible under its final name only when finished: O_TMPFILE (no name
/// at all until linked), or a hidden name in the same directory where O_TMPFILE is missing.
private struct TemporaryFile {
    let fd: Int32
    let directory: String
    /// The hidden name, when the file has one.
    private var name: String?
    /// Set once `fd` is closed, so it is never closed twice (the number may be reused).
    private var closed = false

    init(beside destination: String) throws(DirectIOError) {
        directory = DeviceLimits.parentDirectory(of: destination)
        Self.removeAbandoned(beside: destination)
        if let fd = try? Sys.open(directory, flags: DIO_O_TMPFILE | O_RDWR | O_CLOEXEC, mode: 0o600) {
            self.fd = fd
            name = nil
            return
        }
        let hidden = Self.hiddenName(for: destination)
        do { fd = try Sys.open(hidden, flags: O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o600) } catch {
            throw .system(error, operation: "copy", call: "open", path: directory, detail: "creating a temporary file in \(directory) to copy into")
        }
        name = hidden
    }

    static func hiddenName(for destination: String) -> String {
        DeviceLimits.parentDirectory(of: destination) + "/" + hiddenPrefix(for: destination) + "\(Sys.processID)-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// ".NAME.dio-": hidden names for `destination` start with it, then "PID-RANDOM".
    private static func hiddenPrefix(for destination: String) -> String {
        "." + Transfer.lastComponent(of: destination) + ".dio-"
    }

    /// Removes hidden names for `destination` left by copies that were killed: replacing an
    /// existing file needs a hidden name between linkat and rename (linkat cannot replace),
    /// and a SIGKILL in that instant leaves it. Only names whose process is gone are removed.
    private static func removeAbandoned(beside destination: String) {
        let directory = DeviceLimits.parentDirectory(of: destination)
        let prefix = hiddenPrefix(for: destination)
        guard let names = try? Sys.directoryEntries(directory) else { return }
        for name in names where name.hasPrefix(prefix) {
            guard let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "-" }), pid != Sys.processID, !Sys.processExists(pid) else { continue }
            _ = try? Sys.unlink(directory + "/" + name)
        }
    }

    /// Gives the finished file its final name (atomically replacing what was there) and syncs
    /// the directory so the name survives a crash.
    mutating func publish(as destination: String) throws(DirectIOError) {
        if name == nil {
            // An O_TMPFILE file gets a name by linkat through /proc/self/fd. linkat will not
            // replace an existing file: then link to a hidden name and rename that over it.
            let handle = "/proc/self/fd/\(fd)"
            var linkedInPlace = false
            do {
                try Sys.link(handle, destination, flags: DIO_AT_SYMLINK_FOLLOW)
                linkedInPlace = true
            } catch .fileExists {
                let hidden = Self.hiddenName(for: destination)
                do { try Sys.link(handle, hidden, flags: DIO_AT_SYMLINK_FOLLOW) } catch {
                    throw .system(error, operation: "copy", call: "linkat", path: hidden)
                }
                name = hidden
            } catch {
                throw .system(error, operation: "copy", call: "linkat", path: destination)
            }
            if linkedInPlace { return try finish(destination) }
        }
        guard let hidden = name else { return }
        do { try Sys.rename(hidden, destination) } catch {
            throw .system(error, operation: "copy", call: "rename", path: destination)
        }
        name = nil
        try finish(destination)
    }

    /// Syncs the directory, so the new name survives a crash, and closes the file.
    private mutating func finish(_ destination: String) throws(DirectIOError) {
        _ = try? Sys.close(fd)
        closed = true
        do {
            let directoryFD = try Sys.open(directory, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            defer { _ = try? Sys.close(directoryFD) }
            try Sys.fsync(directoryFD, dataOnly: false)
        } catch {
            throw .system(error, operation: "copy", call: "fsync", path: directory, detail: "syncing the directory holding \(destination)")
        }
    }

    /// Closes and removes the unfinished file (after `publish` has closed it, only the name
    /// is left to remove, if any).
    func discard() {
        if !closed { _ = try? Sys.close(fd) }
        if let name { _ = try? Sys.unlink(name) }
    }
}
