import CDirectIO
import Glibc
import SystemPackage

/// Every system call DirectIO makes, wrapped once.
///
/// Each wrapper returns the call's value or throws the `Errno` the call set; nothing above this
/// file reads `errno`. Calls that may be interrupted by a signal without side effects are retried
/// on `EINTR` here, so callers never see it. The corresponding C function is named in each
/// wrapper's comment.
enum Sys {
    /// Runs `body` until it returns something other than -1/EINTR; -1 becomes the thrown errno.
    @inline(__always)
    static func check<T: FixedWidthInteger>(retryingEINTR: Bool = true, _ body: () -> T) throws(Errno) -> T {
        while true {
            let value = body()
            if value != -1 { return value }
            let code = dio_errno()
            if retryingEINTR && code == EINTR { continue }
            throw Errno(rawValue: code)
        }
    }

    // MARK: Descriptors

    /// `openat(AT_FDCWD, path, flags, mode)`.
    static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(Errno) -> Int32 {
        try check { dio_open(path, flags, UInt32(mode)) }
    }

    /// `close(fd)`. Not retried on EINTR: Linux always releases the descriptor (close(2) NOTES).
    static func close(_ fd: Int32) throws(Errno) {
        _ = try check(retryingEINTR: false) { Glibc.close(fd) }
    }

    /// `fstat(fd, &st)`.
    static func fstat(_ fd: Int32) throws(Errno) -> stat {
        var st = stat()
        _ = try check { Glibc.fstat(fd, &st) }
        return st
    }

    /// `statx(dirfd, path, flags, mask, &stx)`; with an empty path and AT_EMPTY_PATH it describes `dirfd`.
    static func statx(_ fd: Int32, path: String = "", flags: Int32 = AT_EMPTY_PATH, mask: UInt32) throws(Errno) -> dio_statx {
        var stx = dio_statx()
        _ = try check { dio_statx(fd, path, flags, mask, &stx) }
        return stx
    }

    /// `fstatfs(fd, &buf)`, returning `buf.f_type`, the filesystem's magic number.
    static func filesystemMagic(_ fd: Int32) throws(Errno) -> Int64 {
        var type: Int64 = 0
        _ = try check { dio_fstatfs_type(fd, &type) }
        return type
    }

    /// `unlink(path)`.
    static func unlink(_ path: String) throws(Errno) {
        _ = try check { Glibc.unlink(path) }
    }

    /// `ioctl(fd, request, arg)` for requests that take a pointer.
    static func ioctl(_ fd: Int32, _ request: UInt, _ arg: UnsafeMutableRawPointer) throws(Errno) {
        _ = try check { dio_ioctl_ptr(fd, request, arg) }
    }

    /// `ioctl(fd, request, value)` for requests that take an integer (FICLONE takes a descriptor).
    static func ioctl(_ fd: Int32, _ request: UInt, value: UInt) throws(Errno) {
        _ = try check { dio_ioctl_value(fd, request, value) }
    }

    // MARK: Data

    /// `pread(fd, buf, count, offset)`.
    static func pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ offset: Int64) throws(Errno) -> Int {
        try check { Glibc.pread(fd, buffer, count, off_t(offset)) }
    }

    /// `pwrite(fd, buf, count, offset)`.
    static func pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int, _ offset: Int64) throws(Errno) -> Int {
        try check { Glibc.pwrite(fd, buffer, count, off_t(offset)) }
    }

    /// `preadv(fd, iov, iovcnt, offset)`.
    static func preadv(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int32, _ offset: Int64) throws(Errno) -> Int {
        try check { Glibc.preadv(fd, iov, count, off_t(offset)) }
    }

    /// `pwritev(fd, iov, iovcnt, offset)`.
    static func pwritev(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int32, _ offset: Int64) throws(Errno) -> Int {
        try check { Glibc.pwritev(fd, iov, count, off_t(offset)) }
    }

    /// `pwritev2(fd, iov, iovcnt, offset, flags)`: a write with RWF_* flags.
    static func pwritev2(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int32, _ offset: Int64, flags: Int32) throws(Errno) -> Int {
        try check { dio_pwritev2(fd, iov, count, offset, flags) }
    }

    /// `fsync(fd)` or `fdatasync(fd)`.
    static func fsync(_ fd: Int32, dataOnly: Bool) throws(Errno) {
        _ = try check { dataOnly ? Glibc.fdatasync(fd) : Glibc.fsync(fd) }
    }

    /// `fallocate(fd, mode, offset, length)`.
    static func fallocate(_ fd: Int32, mode: Int32, offset: Int64, length: Int64) throws(Errno) {
        _ = try check { dio_fallocate(fd, mode, offset, length) }
    }

    /// `ftruncate(fd, length)`.
    static func ftruncate(_ fd: Int32, _ length: Int64) throws(Errno) {
        _ = try check { Glibc.ftruncate(fd, off_t(length)) }
    }

    /// `posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED)`: drops the clean cached pages
    /// of a range (length 0: to the end of the file). It returns the error number instead of
    /// setting errno.
    static func dropCachedPages(_ fd: Int32, offset: Int64 = 0, length: Int64 = 0) throws(Errno) {
        let result = posix_fadvise(fd, off_t(offset), off_t(length), POSIX_FADV_DONTNEED)
        if result != 0 { throw Errno(rawValue: result) }
    }

    /// How many pages of [0, length) of `fd` are in the page cache: a read-only shared mapping
    /// and mincore(2), which reports residency without faulting anything in (fincore(1) does
    /// the same). Works on every kernel, unlike cachestat(2) (6.5+).
    static func cachedPages(_ fd: Int32, length: Int) throws(Errno) -> Int {
        let pages = (length + pageSize - 1) / pageSize
        guard pages > 0 else { return 0 }
        let address = Glibc.mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0)
        guard let address, address != dio_map_failed() else { throw Errno(rawValue: dio_errno()) }
        defer { Glibc.munmap(address, length) }
        var vector = [UInt8](repeating: 0, count: pages)
        _ = try check { Glibc.mincore(address, length, &vector) }
        return vector.reduce(0) { $0 + Int($1 & 1) }
    }

    /// `posix_fadvise(fd, offset, length, POSIX_FADV_SEQUENTIAL)`: doubles the readahead
    /// window for a file about to be read front to back. Returns the error number.
    static func adviseSequential(_ fd: Int32, offset: Int64, length: Int64) throws(Errno) {
        let result = posix_fadvise(fd, off_t(offset), off_t(length), POSIX_FADV_SEQUENTIAL)
        if result != 0 { throw Errno(rawValue: result) }
    }

    /// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds (a vDSO call: no system call).
    @inline(__always)
    /// Sleeps the calling thread (nanosleep, resumed after signals until the time is up).
    static func sleep(nanoseconds: UInt64) {
        var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }

    static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }

    /// `getrusage(RUSAGE_SELF)`: user and system CPU seconds of the whole process, including
    /// io_uring's io-wq worker threads.
    static func cpuSeconds() -> (user: Double, system: Double) {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return (seconds(usage.ru_utime), seconds(usage.ru_stime))
    }

    // MARK: Transfers

    /// `copy_file_range(in, &inOffset, out, &outOffset, count, 0)`; advances both offsets.
    static func copyFileRange(from source: Int32, at sourceOffset: inout Int64, to destination: Int32, at destinationOffset: inout Int64, count: Int) throws(Errno) -> Int {
        try check { dio_copy_file_range(source, &sourceOffset, destination, &destinationOffset, count) }
    }

    /// `splice(in, inOffset, out, outOffset, count, flags)`: a nil offset means the descriptor
    /// is a pipe or socket (or uses its own position); a given one is advanced.
    static func splice(from source: Int32, at sourceOffset: UnsafeMutablePointer<Int64>?, to destination: Int32, at destinationOffset: UnsafeMutablePointer<Int64>?, count: Int, flags: UInt32) throws(Errno) -> Int {
        try check { dio_splice(source, sourceOffset, destination, destinationOffset, count, flags) }
    }

    /// `sendfile(out, in, &offset, count)`; advances `offset`.
    static func sendfile(to destination: Int32, from source: Int32, at offset: inout Int64, count: Int) throws(Errno) -> Int {
        try check { dio_sendfile(destination, source, &offset, count) }
    }

    /// `lseek(fd, offset, whence)`.
    static func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) throws(Errno) -> Int64 {
        try check { dio_lseek(fd, offset, whence) }
    }

    /// `fcntl(fd, command, value)` for commands that take an int.
    static func fcntl(_ fd: Int32, _ command: Int32, _ value: Int32) throws(Errno) -> Int32 {
        try check { dio_fcntl_int(fd, command, value) }
    }

    /// `pipe2(fds, O_CLOEXEC)`: (read end, write end).
    static func pipe() throws(Errno) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try check { dio_pipe2(&fds, O_CLOEXEC) }
        return (fds[0], fds[1])
    }

    /// `read(fd, buf, count)` at the descriptor's position (pipes, sockets).
    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) throws(Errno) -> Int {
        try check { Glibc.read(fd, buffer, count) }
    }

    /// `write(fd, buf, count)` at the descriptor's position (pipes, sockets).
    static func write(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) throws(Errno) -> Int {
        try check { Glibc.write(fd, buffer, count) }
    }

    /// `fchmod(fd, mode)`.
    static func fchmod(_ fd: Int32, _ mode: mode_t) throws(Errno) {
        _ = try check { Glibc.fchmod(fd, mode) }
    }

    /// `rename(from, to)`: atomically replaces `to`.
    static func rename(_ from: String, _ to: String) throws(Errno) {
        _ = try check { Glibc.rename(from, to) }
    }

    /// `linkat(AT_FDCWD, from, AT_FDCWD, to, flags)`.
    static func link(_ from: String, _ to: String, flags: Int32) throws(Errno) {
        _ = try check { Glibc.linkat(AT_FDCWD, from, AT_FDCWD, to, flags) }
    }

    /// `readlink(path)`: the target of symbolic link `path`.
    static func readlink(_ path: String) throws(Errno) -> String {
        var target = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = try target.withUnsafeMutableBufferPointer { (buffer) throws(Errno) -> Int in
            try check { Glibc.readlink(path, UnsafeMutableRawPointer(buffer.baseAddress.unsafelyUnwrapped).assumingMemoryBound(to: CChar.self), buffer.count - 1) }
        }
        return String(decoding: target[0..<count], as: UTF8.self)
    }

    /// `eventfd(0, EFD_CLOEXEC)`: a counter other threads write to wake a ring's worker.
    static func eventfd() throws(Errno) -> Int32 {
        try check { dio_eventfd() }
    }

    /// `fstatat(AT_FDCWD, path, &st, 0)`: stat(2) of `path`, following links.
    static func status(ofPath path: String) throws(Errno) -> stat {
        var info = Glibc.stat()
        _ = try check { fstatat(AT_FDCWD, path, &info, 0) }
        return info
    }

    /// `sysconf(_SC_NPROCESSORS_ONLN)`: cores online now, at least 1.
    static var onlineCores: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// `getpid()`.
    static var processID: Int32 { getpid() }

    /// `kill(pid, 0)`: whether process `pid` exists (EPERM: it does, owned by someone else).
    static func processExists(_ pid: Int32) -> Bool {
        Glibc.kill(pid, 0) == 0 || dio_errno() == EPERM
    }

    /// `access(path, F_OK)`: whether `path` exists (following links).
    static func exists(_ path: String) -> Bool {
        Glibc.access(path, F_OK) == 0
    }

    /// `realpath(path, NULL)`: the path with every symbolic link resolved.
    static func realpath(_ path: String) throws(Errno) -> String {
        guard let resolved = Glibc.realpath(path, nil) else { throw Errno(rawValue: dio_errno()) }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The names in directory `path` (`opendir`/`readdir`), without "." and "..".
    static func directoryEntries(_ path: String) throws(Errno) -> [String] {
        guard let directory = opendir(path) else { throw Errno(rawValue: dio_errno()) }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    // MARK: Memory

    /// `mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|extraFlags, -1, 0)`.
    static func mmapAnonymous(length: Int, extraFlags: Int32 = 0) throws(Errno) -> UnsafeMutableRawPointer {
        try mmap(length: length, flags: MAP_PRIVATE | MAP_ANONYMOUS | extraFlags, fd: -1, offset: 0)
    }

    /// `mmap(NULL, length, PROT_READ|PROT_WRITE, flags, fd, offset)`.
    static func mmap(length: Int, flags: Int32, fd: Int32, offset: Int64) throws(Errno) -> UnsafeMutableRawPointer {
        let address = Glibc.mmap(nil, length, PROT_READ | PROT_WRITE, flags, fd, off_t(offset))
        guard let address, address != dio_map_failed() else { throw Errno(rawValue: dio_errno()) }
        return address
    }

    /// `munmap(address, length)`. Fails only for arguments DirectIO never passes.
    static func munmap(_ address: UnsafeMutableRawPointer, _ length: Int) throws(Errno) {
        _ = try check { Glibc.munmap(address, length) }
    }

    /// `mlock(address, length)`.
    static func mlock(_ address: UnsafeRawPointer, _ length: Int) throws(Errno) {
        _ = try check { Glibc.mlock(address, length) }
    }

    /// `madvise(address, length, advice)`.
    static func madvise(_ address: UnsafeMutableRawPointer, _ length: Int, _ advice: Int32) throws(Errno) {
        _ = try check { Glibc.madvise(address, length, advice) }
    }

    /// `getrlimit(RLIMIT_MEMLOCK)`: the soft limit in bytes, nil when unlimited.
    static func memlockLimit() -> UInt64? {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(UInt32(DIO_RLIMIT_MEMLOCK)), &limit) == 0 else { return nil }
        // RLIM_INFINITY is ~0 (bits/resource.h); it does not import as a Swift constant.
        return limit.rlim_cur == rlim_t.max ? nil : UInt64(limit.rlim_cur)
    }

    /// `sysconf(_SC_PAGESIZE)`.
    static let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))

    // MARK: io_uring

    /// `io_uring_setup(entries, &params)`.
    static func ioUringSetup(entries: UInt32, params: inout dio_uring_params) throws(Errno) -> Int32 {
        try check { dio_io_uring_setup(entries, &params) }
    }

    /// `io_uring_enter(fd, toSubmit, minComplete, flags, NULL, 0)`. EINTR is returned, not retried:
    /// the caller must re-check the rings, since some submissions may have been consumed.
    static func ioUringEnter(_ fd: Int32, toSubmit: UInt32, minComplete: UInt32, flags: UInt32) throws(Errno) -> Int {
        Int(try check(retryingEINTR: false) { dio_io_uring_enter(fd, toSubmit, minComplete, flags) })
    }

    /// `io_uring_register(fd, opcode, arg, count)`.
    static func ioUringRegister(_ fd: Int32, opcode: UInt32, arg: UnsafeRawPointer?, count: UInt32) throws(Errno) -> Int {
        Int(try check { dio_io_uring_register(fd, opcode, arg, count) })
    }
}
