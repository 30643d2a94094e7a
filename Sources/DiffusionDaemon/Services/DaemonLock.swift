import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a daemon could not take its directories.
public struct DaemonLockError: Error, CustomStringConvertible, Sendable {
    /// The directory another daemon holds.
    public var directory: String
    /// The lock file in it.
    public var lockFile: String
    /// The holder's pid, as it wrote it into the lock file (nil if unreadable).
    public var holderPID: Int?
    /// Set when the lock file could not be opened or locked at all (errno text).
    public var failure: String?

    public var description: String {
        if let failure { return "cannot lock \(lockFile): \(failure)" }
        let holder = holderPID.map { "another diffusiond (pid \($0))" } ?? "another diffusiond"
        return "\(holder) is already running on \(directory) (it holds \(lockFile)); "
            + "two daemons must not share a spool, output or state directory"
    }
}

/// Exclusive ownership of the spool, output and state directories for the life
/// of the process: an `flock(LOCK_EX | LOCK_NB)` on `<dir>/.diffusiond.lock`
/// in each, with the holder's pid written inside. The kernel drops the locks
/// when the process exits, however it exits (SIGKILL included), so a stale lock
/// file never blocks a restart. A second daemon pointed at any of the same
/// directories fails to start with an error naming the holder's pid.
public final class DaemonLock: Sendable {
    public static let fileName = ".diffusiond.lock"

    /// The lock files held, by path.
    public let paths: [String]
    private let fds: [Int32]

    /// Takes the lock in every directory of `directories` (duplicates and
    /// aliases of one directory are taken once), or none.
    public init(directories: [String]) throws(DaemonLockError) {
        var seen = Set<String>()
        var fds: [Int32] = []
        var paths: [String] = []
        for dir in directories {
            let key = Self.identity(dir) ?? dir
            guard seen.insert(key).inserted else { continue }
            let path = (dir as NSString).appendingPathComponent(Self.fileName)
            do {
                fds.append(try Self.take(path: path, directory: dir))
                paths.append(path)
            } catch {
                for fd in fds { close(fd) }
                throw error
            }
        }
        self.fds = fds
        self.paths = paths
    }

    deinit { for fd in fds { close(fd) } }

    /// device:inode of a directory, so that two spellings of one folder lock once.
    static func identity(_ dir: String) -> String? {
        var st = stat()
        guard stat(dir, &st) == 0 else { return nil }
        return "\(st.st_dev):\(st.st_ino)"
    }

    static func take(path: String, directory: String) throws(DaemonLockError) -> Int32 {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else {
            throw DaemonLockError(directory: directory, lockFile: path, holderPID: nil, failure: String(cString: strerror(errno)))
        }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let e = errno
            if e == EINTR { continue }
            let holder = readPID(fd: fd)
            close(fd)
            if e == EWOULDBLOCK {
                throw DaemonLockError(directory: directory, lockFile: path, holderPID: holder, failure: nil)
            }
            throw DaemonLockError(directory: directory, lockFile: path, holderPID: nil, failure: String(cString: strerror(e)))
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        return fd
    }

    static func readPID(fd: Int32) -> Int? {
        var buf = [UInt8](repeating: 0, count: 32)
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return Int(String(decoding: buf[0 ..< n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Who holds the lock of a directory, asked the way the kernel knows it.
    public enum Holder: Sendable, Equatable {
        /// A live process holds it (its pid as written in the lock file, when readable).
        case held(pid: Int?)
        /// Nobody: no daemon runs on that directory (the lock file may be left from one that did).
        case free
        /// The lock file could not be asked (the reason: permissions, ...).
        case unknown(String)
    }

    /// Asks the lock file in `directory` without taking it for more than an instant:
    /// a shared `flock` fails while a daemon holds its exclusive one.
    public static func holder(in directory: String) -> Holder {
        let path = (directory as NSString).appendingPathComponent(fileName)
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            return errno == ENOENT ? .free : .unknown("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        while flock(fd, LOCK_SH | LOCK_NB) != 0 {
            let e = errno
            if e == EINTR { continue }
            if e == EWOULDBLOCK { return .held(pid: readPID(fd: fd)) }
            return .unknown("cannot lock \(path): \(String(cString: strerror(e)))")
        }
        _ = flock(fd, LOCK_UN)
        return .free
    }
}
