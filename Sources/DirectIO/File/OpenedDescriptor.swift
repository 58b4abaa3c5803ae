import CDirectIO
import Glibc
import SystemPackage

/// Opening a file for direct I/O, shared by `DirectFile` and `AsyncFile`: O_DIRECT as the
/// options ask, a fallback to buffered I/O for `.preferred` where the filesystem refuses it
/// (at open, or at the first real read, which the limits' probe makes), and the file's limits.
struct OpenedDescriptor {
    let fd: Int32
    let limits: DeviceLimits
    let isDirect: Bool
    /// With `.preferred`, why direct I/O is not in use.
    let fallbackNote: String?
    let identity: DirectFile.Identity

    /// Opens `path`; on failure nothing is left open, and a file this call created is removed.
    static func open(path: String, options: OpenOptions) throws(DirectIOError) -> OpenedDescriptor {
        // Only a create may leave a new file behind to remove on failure.
        let existedBefore = options.create && Sys.exists(path)
        var fd: Int32
        var direct = options.directIO != .disabled
        var note: String? = nil
        do {
            fd = try Sys.open(path, flags: options.flags | (direct ? DIO_O_DIRECT : 0), mode: options.permissions)
        } catch .invalidArgument where direct {
            // Some filesystems answer EINVAL, not EISDIR, for a directory opened with O_DIRECT.
            if let info = try? Sys.status(ofPath: path), info.st_mode & S_IFMT == S_IFDIR {
                throw DirectIOError(.isDirectory, operation: "open", path: path, systemCall: "open", errno: .invalidArgument,
                                    detail: "direct I/O reads and writes files and block devices: name a file in this directory")
            }
            // open(2): EINVAL with O_DIRECT means the filesystem does not support it.
            let filesystem = filesystemName(near: path)
            if options.create && !existedBefore { _ = try? Sys.unlink(path) }
            guard options.directIO == .preferred else {
                throw DirectIOError(.directIOUnsupported, operation: "open", path: path, systemCall: "open", errno: .invalidArgument,
                                    detail: "the \(filesystem) filesystem refuses O_DIRECT; " + OpenOptions.bufferedRemedy)
            }
            note = "the \(filesystem) filesystem refuses O_DIRECT (open: EINVAL); using buffered I/O"
            direct = false
            do { fd = try Sys.open(path, flags: options.flags, mode: options.permissions) } catch {
                throw .system(error, operation: "open", call: "open", path: path)
            }
        } catch {
            throw .system(error, operation: "open", call: "open", path: path)
        }

        let limits: DeviceLimits
        do { limits = try DeviceLimits.of(fd: fd, path: path) } catch {
            _ = try? Sys.close(fd)
            throw error
        }
        if direct && !limits.directIO {
            // open accepted O_DIRECT but direct I/O does not actually work (overlayfs over
            // squashfs, some FUSE): the probe found out with a real read.
            guard options.directIO == .preferred else {
                _ = try? Sys.close(fd)
                if options.create && !existedBefore { _ = try? Sys.unlink(path) }
                throw DirectIOError(.directIOUnsupported, operation: "open", path: path,
                                    detail: "the \(limits.filesystem) filesystem accepts O_DIRECT but direct I/O fails (\(limits.directIONote)); " + OpenOptions.bufferedRemedy)
            }
            do {
                let flags = try Sys.fcntl(fd, F_GETFL, 0)
                _ = try Sys.fcntl(fd, F_SETFL, flags & ~DIO_O_DIRECT)
            } catch {
                _ = try? Sys.close(fd)
                if options.create && !existedBefore { _ = try? Sys.unlink(path) }
                throw .system(error, operation: "open", call: "fcntl(F_SETFL)", path: path, detail: "clearing O_DIRECT to fall back to buffered I/O")
            }
            note = "the \(limits.filesystem) filesystem accepts O_DIRECT but direct I/O fails (\(limits.directIONote)); using buffered I/O"
            direct = false
        }
        let stat: stat
        do { stat = try Sys.fstat(fd) } catch {
            _ = try? Sys.close(fd)
            throw .system(error, operation: "open", call: "fstat", path: path)
        }
        return OpenedDescriptor(fd: fd, limits: limits, isDirect: direct, fallbackNote: note,
                                identity: DirectFile.Identity(device: UInt64(stat.st_dev), inode: UInt64(stat.st_ino)))
    }

    private static func filesystemName(near path: String) -> String {
        let directory = DeviceLimits.parentDirectory(of: path)
        guard let fd = try? Sys.open(access(path, F_OK) == 0 ? path : directory, flags: O_RDONLY | O_CLOEXEC) else { return "this" }
        defer { _ = try? Sys.close(fd) }
        return (try? Sys.filesystemMagic(fd)).map(FilesystemName.fromMagic) ?? "this"
    }
}
