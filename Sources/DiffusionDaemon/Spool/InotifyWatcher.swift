import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Non-blocking inotify on one directory for IN_CLOSE_WRITE and IN_MOVED_TO
/// (IN_CREATE fires before any content exists, so it is not watched).
public final class InotifyWatcher: @unchecked Sendable {
    private let fd: Int32
    private let wd: Int32
    public let directory: String

    public init(directory: String) throws {
        self.directory = directory
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        wd = inotify_add_watch(fd, directory, UInt32(IN_CLOSE_WRITE | IN_MOVED_TO))
        guard wd >= 0 else {
            let e = errno
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: e) ?? .EIO)
        }
    }

    deinit { close(fd) }

    /// Events read so far: the names that changed, and whether the queue overflowed
    /// (then the caller must rescan the directory).
    public func drain() -> (names: [String], overflow: Bool) {
        var names: [String] = []
        var overflow = false
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= n {
                let (mask, len) = buffer.withUnsafeBytes { raw -> (UInt32, Int) in
                    let ev = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                    return (ev.mask, Int(ev.len))
                }
                if mask & UInt32(IN_Q_OVERFLOW) != 0 { overflow = true }
                if len > 0 {
                    let start = offset + MemoryLayout<inotify_event>.size
                    let bytes = buffer[start ..< start + len].prefix { $0 != 0 }
                    names.append(String(decoding: bytes, as: UTF8.self))
                }
                offset += MemoryLayout<inotify_event>.size + len
            }
        }
        return (names, overflow)
    }
}
