/// Plans handed back after their transfers, for the next transfers to plan into: a plan's
/// lists keep their storage, so planning a realigned request allocates nothing once a few
/// plans of the usual shape have been made. Each engine keeps one set (its synchronous and
/// batched requests), each runtime another (its tasks').
final class SparePlans: Sendable {
    // A pthread mutex (ConditionLock), not Synchronization's Mutex: ThreadSanitizer sees the
    // ordering of the former only (a CI run reported the latter's accesses as races).
    private let plans = ConditionLock<[TransferPlan]>([])
    private let limit: Int

    /// - Parameter limit: plans kept at most (about the requests that realign at once).
    init(limit: Int) {
        self.limit = limit
    }

    /// A plan to plan into: a kept one, or a new (empty) one.
    func take() -> TransferPlan {
        plans.withLock { $0.popLast() } ?? TransferPlan()
    }

    /// Keeps `plan` for a later transfer, unless enough are kept or it grew large (a plan
    /// of a huge transfer would hold its memory for nothing).
    func keep(_ plan: TransferPlan) {
        guard plan.isSmall else { return }
        plans.withLock { kept in
            if kept.count < limit { kept.append(plan) }
        }
    }
}
