import Foundation
import Provenance

/// The runner's hold on its claim: the lease the heartbeat renews, and the local deadline after
/// which the runner acts as if the lease were gone (it writes no file past it).
///
/// The deadline is counted on this process's monotonic clock from the moment the claim or the last
/// successful renewal was *sent*, and ends a margin (a fifth of the lease) before the store's own
/// expiry could, so a worker stops before any other worker can take its shard over. A worker frozen
/// past its deadline (SIGSTOP, a stalled VM) may still be in the middle of a write when it wakes: the
/// store's fencing token refuses that write (`LeaseLost`), and a file it renames into place is never
/// one another worker recorded (`ImageWriter.place`).
public final class LeaseKeeper: Sendable {
    struct Hold: Sendable {
        var claim: ShardClaim
        var deadline: ContinuousClock.Instant
        var lost = false
    }

    private let hold = Locked<Hold?>(nil)
    /// Claims held for a batch shared across jobs, waiting for their turn to be written (renewed too).
    private let waiting = Locked<[Hold]>([])

    /// A keeper that holds nothing yet.
    public init() {}

    /// The fraction of the lease the local deadline leaves before the store's expiry.
    static let margin = 0.2

    /// The local deadline of a lease granted or renewed by a request sent at `sent`; a lease whose
    /// store never expires it (`expiresAt` infinite: one host) has none.
    static func deadline(sent: ContinuousClock.Instant, leaseSeconds: Double, lease: ShardLease) -> ContinuousClock.Instant {
        if lease.expiresAt.isInfinite { return sent + .seconds(100 * 365 * 86_400) }
        return sent + .milliseconds(Int(leaseSeconds * (1 - margin) * 1000))
    }

    /// Starts holding `claim`, whose request was sent at `sent`.
    public func start(_ claim: ShardClaim, sent: ContinuousClock.Instant, leaseSeconds: Double) {
        hold.set(Hold(claim: claim, deadline: Self.deadline(sent: sent, leaseSeconds: leaseSeconds, lease: claim.lease)))
    }

    /// Stops holding (the shard ended, was released, or was lost).
    public func end() { hold.set(nil) }

    /// Holds `claim` beside the current one until `activate` makes it current (a batch shared
    /// across jobs holds every member's claim while it samples).
    public func startWaiting(_ claim: ShardClaim, sent: ContinuousClock.Instant, leaseSeconds: Double) {
        let h = Hold(claim: claim, deadline: Self.deadline(sent: sent, leaseSeconds: leaseSeconds, lease: claim.lease))
        waiting.withLock { $0.append(h) }
    }

    /// Makes the waiting `claim` the current one, with its lease as renewed meanwhile (or lost).
    public func activate(_ claim: ShardClaim) {
        let h = waiting.withLock { list -> Hold? in
            guard let i = list.firstIndex(where: { Self.same($0.claim, claim) }) else { return nil }
            return list.remove(at: i)
        }
        hold.set(h ?? Hold(claim: claim, deadline: .now, lost: true))
    }

    /// True while `claim` (current or waiting) is held, not known lost, within its local deadline.
    public func isHeld(_ claim: ShardClaim) -> Bool {
        let all = (hold.current.map { [$0] } ?? []) + waiting.current
        guard let h = all.first(where: { Self.same($0.claim, claim) }) else { return false }
        return !h.lost && ContinuousClock.now < h.deadline
    }

    /// The claim held now, lost or not.
    public var claim: ShardClaim? { hold.current?.claim }

    /// True while a claim is held, not known lost, and its local deadline has not passed.
    public var isHeld: Bool {
        guard let h = hold.current else { return false }
        return !h.lost && ContinuousClock.now < h.deadline
    }

    /// True when `a` and `b` are the same claim (job, shard and token).
    static func same(_ a: ShardClaim, _ b: ShardClaim) -> Bool {
        a.job.id == b.job.id && a.shard == b.shard && a.lease.token == b.lease.token
    }

    /// Marks the held claim lost (a write under it was refused).
    public func markLost() { hold.withLock { $0?.lost = true } }

    /// Renews the held leases in `store` (the heartbeat calls it): the current one and any waiting.
    /// A refusal marks that claim lost; an unreachable store leaves the deadline as it is, so the
    /// claim runs out locally in time. Returns false when the current claim is (now) lost.
    @discardableResult
    public func renew(in store: any JobStore, leaseSeconds: Double) -> Bool {
        for w in waiting.current where !w.lost {
            let sent = ContinuousClock.now
            let renewed = Self.renewal(of: w.claim, in: store, leaseSeconds: leaseSeconds)
            waiting.withLock { list in
                guard let i = list.firstIndex(where: { Self.same($0.claim, w.claim) }) else { return }
                switch renewed {
                case let .renewed(lease)?:
                    list[i].claim.lease = lease
                    list[i].deadline = Self.deadline(sent: sent, leaseSeconds: leaseSeconds, lease: lease)
                case .lost?: list[i].lost = true
                case nil: break
                }
            }
        }
        guard let h = hold.current, !h.lost else { return hold.current == nil }
        let sent = ContinuousClock.now
        switch Self.renewal(of: h.claim, in: store, leaseSeconds: leaseSeconds) {
        case let .renewed(lease)?:
            hold.withLock { current in
                guard let c = current?.claim, Self.same(c, h.claim) else { return }
                current?.claim.lease = lease
                current?.deadline = Self.deadline(sent: sent, leaseSeconds: leaseSeconds, lease: lease)
            }
            return true
        case .lost?:
            hold.withLock { current in
                if let c = current?.claim, Self.same(c, h.claim) { current?.lost = true }
            }
            return false
        case nil:
            return isHeld
        }
    }

    private enum Renewal { case renewed(ShardLease), lost }

    /// One renewal: the new lease, `.lost` when the store refused it, nil when it could not be asked.
    private static func renewal(of claim: ShardClaim, in store: any JobStore, leaseSeconds: Double) -> Renewal? {
        do {
            return .renewed(try store.renewLease(claim, seconds: leaseSeconds))
        } catch is LeaseLost {
            return .lost
        } catch {
            return nil
        }
    }
}
