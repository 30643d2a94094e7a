import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Non-blocking inotify on one directory: the events that tell when a file in it
/// is complete (closed after writing, or renamed in) or still being written.
public final class InotifyWatcher: @unchecked Sendable {
    private let fd: Int32
    private let wd: Int32
    public let directory: String

    /// What happened to a name in the watched directory.
    public enum Change: Sendable, Equatable {
        /// Created (IN_CREATE): a writer's open, a hard link, a directory, ...
        case created
        /// Written to (IN_MODIFY): a writer has it open.
        case written
        /// A writer closed it (IN_CLOSE_WRITE).
        case closed
        /// Renamed into the directory (IN_MOVED_TO): complete by the renamer's promise.
        case movedIn
        /// Renamed away or deleted.
        case gone
    }

    public init(directory: String) throws {
        self.directory = directory
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let mask = IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE
        wd = inotify_add_watch(fd, directory, UInt32(mask))
        guard wd >= 0 else {
            let e = errno
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: e) ?? .EIO)
        }
    }

    deinit { close(fd) }

    /// Events read so far, in order, and whether the queue overflowed (then the
    /// caller must forget what it knew and rescan the directory).
    public func drain() -> (events: [(name: String, change: Change)], overflow: Bool) {
        var events: [(name: String, change: Change)] = []
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
                if len > 0, let change = Self.change(mask) {
                    let start = offset + MemoryLayout<inotify_event>.size
                    let bytes = buffer[start ..< start + len].prefix { $0 != 0 }
                    events.append((String(decoding: bytes, as: UTF8.self), change))
                }
                offset += MemoryLayout<inotify_event>.size + len
            }
        }
        return (events, overflow)
    }

    static func change(_ mask: UInt32) -> Change? {
        if mask & UInt32(IN_CLOSE_WRITE) != 0 { return .closed }
        if mask & UInt32(IN_MOVED_TO) != 0 { return .movedIn }
        if mask & UInt32(IN_MOVED_FROM | IN_DELETE) != 0 { return .gone }
        if mask & UInt32(IN_MODIFY) != 0 { return .written }
        if mask & UInt32(IN_CREATE) != 0 { return .created }
        return nil
    }
}
