import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// When a file in spool/incoming is complete, so that the daemon may claim it.
///
/// A writer's close (IN_CLOSE_WRITE: `cp`, `cat >`, an editor writing in place)
/// or a rename into incoming/ (IN_MOVED_TO: `mv`, `rsync`, `diffusionctl submit`)
/// marks a file complete. A file written to since its last close is still open
/// for writing and waits for the close, however long the writer pauses. A file
/// the watcher has no close or rename for (there before the daemon started,
/// linked in, after an event-queue overflow, or without inotify) is complete
/// once its inode has not changed for the settle time (so a writer that pauses longer than that
/// in a file the daemon found at its start is not seen: write elsewhere and rename, or keep the
/// settle time above the pauses). An empty file also waits
/// the settle time after its close (`touch` before an editor writes it).
public struct IncomingReadiness: Sendable {
    enum State: Sendable, Equatable {
        /// Written to since its last close: a writer has it open.
        case writing
        /// Created (no write yet) at this wall-clock time: settles like a scanned file.
        case created(Double)
        /// Closed after writing, or renamed in, at this wall-clock time.
        case complete(Double)
    }

    private(set) var states: [String: State] = [:]
    /// The order in which files completed (closed or renamed in), by name.
    private var completions: [String: Int] = [:]
    private var completed = 0
    /// How long a file without a close or rename must stay unchanged.
    public var settleSeconds: Double

    public init(settleSeconds: Double) { self.settleSeconds = settleSeconds }

    /// Takes in the watcher's events, in the order they happened.
    public mutating func record(_ events: [(name: String, change: InotifyWatcher.Change)], now: Double = Self.wallClock()) {
        for (name, change) in events {
            switch change {
            case .created: states[name] = .created(now)
            case .written: states[name] = .writing
            case .closed, .movedIn:
                states[name] = .complete(now)
                completed += 1
                completions[name] = completed
            case .gone:
                states.removeValue(forKey: name)
                completions.removeValue(forKey: name)
            }
        }
    }

    /// Forgets every event (after an overflow): each file then settles as if found by a scan.
    public mutating func forget() {
        states.removeAll()
        completions.removeAll()
    }

    /// Whether a writer has `name` open (written to since its last close).
    public func isBeingWritten(_ name: String) -> Bool { states[name] == .writing }

    /// Where `name` came in the order files completed (Int.max when no event was seen).
    public func arrivalIndex(_ name: String) -> Int { completions[name] ?? Int.max }

    /// Whether the regular file `name` at `path` may be claimed now.
    public func isComplete(name: String, path: String, now: Double = Self.wallClock()) -> Bool {
        var st = stat()
        guard lstat(path, &st) == 0 else { return false }
        let changed = Double(st.st_ctim.tv_sec) + Double(st.st_ctim.tv_nsec) / 1e9
        let settled = now - changed >= settleSeconds
        switch states[name] {
        case .writing?: return false
        case .complete(let at)?: return st.st_size > 0 || (settled && now - at >= settleSeconds)
        case .created?, nil: return settled
        }
    }

    /// Seconds since the epoch (the clock of st_ctime).
    public static func wallClock() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
