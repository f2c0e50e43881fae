// Beaconing: the same target retried at a regular interval.

#include "controller/analyzer/analyzer_state.hpp"

#include <cmath>
#include <cstdio>

namespace bulkhead::analyzer {

// Series whose last drop is older than max_interval can no longer continue.
void Analyzer::Impl::purge_beacons(SourceState& s, std::int64_t t) {
    std::vector<std::uint64_t> stale;
    s.beacons.for_each([&](std::uint64_t key, const BeaconState& b) {
        if (t - b.last_ns > seconds(config.beaconing.max_interval_seconds)) {
            stale.push_back(key);
        }
    });
    for (auto key : stale) {
        s.beacons.erase(key);
    }
}

void Analyzer::Impl::beacon_detector(std::uint32_t id, std::uint64_t key, std::int64_t t) {
    const auto& c = config.beaconing;
    if (!c.enabled) {
        return;
    }
    auto& s = sources[id];
    auto* b = s.beacons.find(key);
    if (b == nullptr) {
        if (s.beacons.size() >= c.max_tracked_per_source) {
            purge_beacons(s, t);
        }
        if (s.beacons.size() >= c.max_tracked_per_source) {
            ++totals.saturated;
            return;
        }
        bool inserted = false;
        auto& fresh = s.beacons.get_or_insert(key, inserted);
        fresh.first_ns = fresh.last_ns = fresh.attempt_ns = t;
        fresh.attempts = 1;
        return;
    }
    // An attempt ends after min_interval of silence: drops closer together (SYN
    // retransmits, a continuous retry loop) are one attempt. Intervals are measured
    // between the starts of attempts.
    const std::int64_t silence = t - b->last_ns;
    b->last_ns = t;
    if (silence < seconds(c.min_interval_seconds)) {
        return;
    }
    const std::int64_t gap = t - b->attempt_ns;
    b->attempt_ns = t;
    if (gap > seconds(c.max_interval_seconds)) {
        b->filled = 0; // too long a pause: a new series
        b->head = 0;
        b->first_ns = t;
        b->attempts = 1;
        return;
    }
    ++b->attempts;
    b->intervals[b->head] = static_cast<std::uint16_t>(
        std::min<std::int64_t>(gap / 100'000'000, std::numeric_limits<std::uint16_t>::max()));
    b->head = static_cast<std::uint8_t>((b->head + 1) % kBeaconRing);
    if (b->filled < kBeaconRing) {
        ++b->filled;
    }
    // The last `want` intervals: the ring holds 16, the usual test reads min_intervals.
    // The last `want` intervals in one pass (sum and sum of squares, in tenths of a second).
    auto interval_stats = [&](std::size_t want, double& mean, double& cv) {
        std::uint64_t sum = 0, squares = 0;
        for (std::size_t k = 1; k <= want; ++k) {
            const std::uint64_t v = b->intervals[(b->head + kBeaconRing - k) & (kBeaconRing - 1)];
            sum += v;
            squares += v * v;
        }
        const double n = static_cast<double>(want);
        const double m = static_cast<double>(sum) / n;
        const double variance = std::max(0.0, static_cast<double>(squares) / n - m * m);
        mean = 100.0 * m; // ms
        cv = m > 0 ? std::sqrt(variance) / m : 1.0;
    };
    const std::size_t filled = b->filled;
    const std::size_t usual = std::min<std::size_t>(std::max<std::uint32_t>(c.min_intervals, 2), kBeaconRing);
    if (filled < usual) {
        return;
    }
    double mean = 0, cv = 1;
    interval_stats(usual, mean, cv);
    bool regular = cv <= c.max_cv && mean >= 1000.0 * c.min_period_seconds;
    // (The longer test only where the usual window already looks nearly regular: most
    // fast series are retry loops with cv of 0.3 or more, and skip it.)
    if (!regular && mean < 1000.0 * c.min_period_seconds && cv <= 2 * c.short_max_cv) {
        // Intervals are at least min_interval by construction; close to it, that floor
        // alone makes random retries look regular: a fast series must be longer and tighter.
        const std::size_t longer =
            std::min<std::size_t>(std::max<std::uint32_t>(c.short_min_intervals, 2), kBeaconRing);
        if (filled >= longer) {
            interval_stats(longer, mean, cv);
            regular = cv <= c.short_max_cv;
        }
    }
    if (!regular || !may_fire(s, Rule::Beaconing, t, seconds(c.quiet_seconds))) {
        return;
    }
    auto f = make(Rule::Beaconing, c.severity, b->first_ns, t);
    f.distinct_hosts = f.distinct_ports = f.distinct_targets = 1;
    f.score = std::max(0.0, 1.0 - cv);
    char stats[96];
    std::snprintf(stats, sizeof stats, " (cv %.2f, periodicity %.2f)", cv, f.score);
    f.explanation = who(s) + " retried " + target_text(key) + " " +
                    std::to_string(b->attempts) + " times every " +
                    format_duration(static_cast<std::int64_t>(mean * 1e6)) + stats;
    f.sample_targets.push_back(target_text(key));
    accept(id, std::move(f));
}

} // namespace bulkhead::analyzer
