// Beaconing: the same target retried at a regular interval.

#include "controller/analyzer/analyzer_state.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <span>

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

namespace {

// Whether a drop starts a new attempt at the target or repeats one already counted.
// With source ports: a retransmitted TCP SYN keeps its attempt's port (and ISN) and a new
// connect gets a new one, so the port decides whatever the time gap. A UDP socket may keep
// its port for good (NTP's 123, a resolver's socket): the same port again after a silence
// is the program's next attempt. Without a port (ICMP, older events), silence decides.
bool starts_attempt(const BeaconState& b, std::int64_t t, std::uint8_t protocol, std::uint16_t sport,
                    std::int64_t min_silence, std::int64_t min_gap) {
    constexpr std::uint8_t kTcp = 6;
    const std::int64_t silence = t - b.last_ns;
    if (sport == 0 || b.attempt_sports[0] == 0) {
        return silence >= min_silence;
    }
    if (sport == b.attempt_sports[0]) {
        return protocol != kTcp && silence >= min_silence;
    }
    if (((b.burst_ports >> (sport & 63)) & 1) != 0) {
        return false; // a retransmit of a connect that joined the current attempt
    }
    for (std::size_t k = 1; k < b.attempt_sports.size(); ++k) {
        if (sport == b.attempt_sports[k]) {
            return false; // a late retransmit of an earlier attempt
        }
    }
    return t - b.attempt_ns >= min_gap;
}

// The coefficient of variation the intervals within the spread bound may have, by how many
// are judged. Random retries (exponential intervals) must almost never pass, since every new
// attempt of every followed target is a judgement: in a simulation of 3 million windows each,
// these bounds passed 2e-6 windows of 8 exponential intervals, none of 10 or more, and
// uniform +-30 % jitter 11 % of windows of 8, 44 % of 10, 89 % of 12, 98 % of 14 or 16
// (+-20 %: 70 % of 8, over 95 % of 10 or more). So a beacon with little jitter is judged in
// 8 periods and one with +-30 % in about 12; 8 intervals of random retries cannot be told from
// +-30 % jitter more reliably than 1 in 50,000, which a site sees many times a day.
double max_variation(std::size_t intervals) {
    return intervals >= 14 ? 0.22 : intervals >= 12 ? 0.20 : intervals >= 9 ? 0.16 : 0.12;
}

// Intervals off the median by more than the spread factor that a regular series may have: one
// of 16 (a missed or doubled attempt), none of fewer.
std::size_t allowed_outliers(std::size_t intervals) { return intervals / 16; }

// The last `want` intervals of a series, oldest first, in tenths of a second.
std::size_t last_intervals(const BeaconState& b, std::size_t want, std::array<double, kBeaconRing>& out) {
    for (std::size_t k = 0; k < want; ++k) {
        out[k] = b.intervals[(b.head + kBeaconRing - want + k) & (kBeaconRing - 1)];
    }
    return want;
}

// A necessary condition for regularity, in one pass without sorting, so that the many series
// of random retries (every new attempt is a judgement) cost little. The intervals within the
// spread bound are all of them, or all but the smallest or the largest when one outlier is
// allowed: the best of those coefficients of variation must be within the bound.
bool may_be_regular(const BeaconState& b, std::size_t want) {
    std::uint64_t sum = 0, squares = 0, low = std::numeric_limits<std::uint64_t>::max(), high = 0;
    for (std::size_t k = 0; k < want; ++k) {
        const std::uint64_t v = b.intervals[(b.head + kBeaconRing - want + k) & (kBeaconRing - 1)];
        sum += v;
        squares += v * v;
        low = std::min(low, v);
        high = std::max(high, v);
    }
    const double bound = max_variation(want);
    auto within = [&](std::uint64_t s, std::uint64_t q, std::size_t n) {
        if (n == 0 || s == 0) {
            return false;
        }
        const double count = static_cast<double>(n);
        const double mean = static_cast<double>(s) / count;
        const double variance = std::max(0.0, static_cast<double>(q) / count - mean * mean);
        return variance <= bound * bound * mean * mean;
    };
    if (within(sum, squares, want)) {
        return true;
    }
    return allowed_outliers(want) > 0 && (within(sum - high, squares - high * high, want - 1) ||
                                          within(sum - low, squares - low * low, want - 1));
}

// What the last intervals of a series say about its regularity, robust to the odd outlier
// and meaningful for 8 intervals as for 16: median and quartiles, not mean and variance.
struct IntervalStats {
    std::size_t count = 0;
    double median_ms = 0;
    double dispersion = 1; // median absolute deviation / median: ±30 % uniform jitter ~0.15
    double skew = 0;       // Bowley: (Q3 + Q1 - 2 median) / (Q3 - Q1), 0 with little spread
    std::size_t outliers = 0; // intervals off the median by more than a factor `spread`
    double cv = 1;            // stddev / mean of the others
    double jitter = 0;     // largest deviation from the median, as a fraction of it
    bool growing = false;  // the intervals rise steadily: a back-off, not a beacon
};

// Linear interpolation between order statistics.
double quantile(std::span<const double> sorted, double p) {
    const double position = p * static_cast<double>(sorted.size() - 1);
    const auto below = static_cast<std::size_t>(position);
    const std::size_t above = std::min(below + 1, sorted.size() - 1);
    const double weight = position - static_cast<double>(below);
    return sorted[below] * (1 - weight) + sorted[above] * weight;
}

IntervalStats interval_stats(const BeaconState& b, std::size_t want, double spread) {
    std::array<double, kBeaconRing> in_order{};
    last_intervals(b, want, in_order);
    const std::span<const double> series(in_order.data(), want);
    std::array<double, kBeaconRing> sorted = in_order;
    std::sort(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(want));
    const std::span<const double> ordered(sorted.data(), want);
    IntervalStats stats;
    stats.count = want;
    const double median = quantile(ordered, 0.5);
    stats.median_ms = 100.0 * median;
    if (median <= 0) {
        return stats;
    }
    std::array<double, kBeaconRing> deviations{};
    double sum = 0, squares = 0;
    std::size_t kept = 0;
    for (std::size_t k = 0; k < want; ++k) {
        deviations[k] = std::abs(series[k] - median);
        stats.jitter = std::max(stats.jitter, deviations[k] / median);
        if (series[k] * spread < median || series[k] > median * spread) {
            ++stats.outliers;
        } else {
            sum += series[k];
            squares += series[k] * series[k];
            ++kept;
        }
    }
    if (kept > 0) {
        const double mean = sum / static_cast<double>(kept);
        stats.cv = std::sqrt(std::max(0.0, squares / static_cast<double>(kept) - mean * mean)) / mean;
    }
    std::sort(deviations.begin(), deviations.begin() + static_cast<std::ptrdiff_t>(want));
    stats.dispersion = quantile(std::span<const double>(deviations.data(), want), 0.5) / median;
    const double q1 = quantile(ordered, 0.25), q3 = quantile(ordered, 0.75);
    // Quartiles within a tenth of the median say nothing about the shape: a few tenths of a
    // second of scheduling noise would make any skew.
    stats.skew = q3 - q1 > 0.1 * median ? (q3 + q1 - 2 * median) / (q3 - q1) : 0.0;
    // Kendall's tau against the order of arrival, and the growth from the first half's median
    // to the second's: jitter gives neither, a back-off gives both.
    int rising = 0, falling = 0;
    for (std::size_t i = 0; i < want; ++i) {
        for (std::size_t j = i + 1; j < want; ++j) {
            rising += series[j] > series[i] ? 1 : 0;
            falling += series[j] < series[i] ? 1 : 0;
        }
    }
    const double pairs = static_cast<double>(want * (want - 1) / 2);
    const double tau = static_cast<double>(rising - falling) / pairs;
    auto half_median = [&](std::size_t from) {
        std::array<double, kBeaconRing> half{};
        std::copy_n(series.begin() + static_cast<std::ptrdiff_t>(from), want / 2, half.begin());
        std::sort(half.begin(), half.begin() + static_cast<std::ptrdiff_t>(want / 2));
        return quantile(std::span<const double>(half.data(), want / 2), 0.5);
    };
    stats.growing = tau >= 0.6 && half_median(want - want / 2) >= 1.25 * half_median(0);
    return stats;
}

} // namespace

void Analyzer::Impl::beacon_detector(std::uint32_t id, std::uint64_t key, std::int64_t t,
                                     std::uint8_t protocol, std::uint16_t sport) {
    const auto& c = config.beaconing;
    if (!c.enabled) {
        return;
    }
    // NTP clients poll their servers on a schedule by design (64 s, doubling to 1,024 s while
    // the server does not answer): a blocked NTP server is a misconfiguration, not a beacon.
    constexpr std::uint8_t kUdp = 17;
    constexpr std::uint16_t kNtpPort = 123;
    if (protocol == kUdp && static_cast<std::uint16_t>(key & 0xFFFF) == kNtpPort) {
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
        fresh.attempt_sports[0] = sport;
        return;
    }
    // Intervals are measured between the starts of attempts.
    const bool fresh_attempt = starts_attempt(*b, t, protocol, sport, seconds(c.min_interval_seconds),
                                              std::int64_t{c.min_attempt_gap_ms} * 1'000'000);
    b->last_ns = t;
    if (!fresh_attempt) {
        if (sport != 0 && t - b->attempt_ns < std::int64_t{c.min_attempt_gap_ms} * 1'000'000) {
            b->burst_ports |= std::uint64_t{1} << (sport & 63);
        }
        return;
    }
    b->burst_ports = 0;
    if (sport != b->attempt_sports[0]) {
        std::copy_backward(b->attempt_sports.begin(), b->attempt_sports.end() - 1, b->attempt_sports.end());
        b->attempt_sports[0] = sport;
    }
    const std::int64_t gap = t - b->attempt_ns;
    b->attempt_ns = t;
    if (gap > seconds(c.max_interval_seconds)) {
        b->filled = 0; // too long a pause: a new series
        b->head = 0;
        b->reported = false;
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
    const std::size_t filled = b->filled;
    const std::size_t usual = std::min<std::size_t>(std::max<std::uint32_t>(c.min_intervals, 4), kBeaconRing);
    if (filled < usual) {
        return;
    }
    // Every interval held is judged (up to 16): more evidence, fewer random look-alikes. A
    // period under min_period is judged over short_min_intervals at least: retry loops live
    // there, and a short period repeats often enough to give that evidence in little time.
    if (!may_be_regular(*b, filled)) {
        return;
    }
    const IntervalStats stats = interval_stats(*b, filled, c.max_spread);
    const double min_period_ms = 1000.0 * c.min_period_seconds;
    if (stats.median_ms < min_period_ms &&
        filled < std::min<std::size_t>(std::max<std::uint32_t>(c.short_min_intervals, 4), kBeaconRing)) {
        return;
    }
    // Split by silence alone (no source port), attempts are at least min_interval apart, and
    // near that floor random retries look regular: such a fast series must be much tighter.
    const bool split_by_ports = b->attempt_sports[0] != 0;
    const double max_dispersion = !split_by_ports && stats.median_ms < min_period_ms
                                      ? c.short_max_dispersion_without_ports
                                      : c.max_dispersion;
    const bool regular = stats.dispersion <= max_dispersion && std::abs(stats.skew) <= c.max_skew &&
                         stats.outliers <= allowed_outliers(stats.count) &&
                         stats.cv <= max_variation(stats.count) && !stats.growing;
    if (!regular) {
        return;
    }
    // A server calling a workload of the inventory on a schedule is most likely a scheduled job
    // or check (a backup, monitoring): between two managed servers it is counted, not
    // reported; from a server the inventory does not name, reported at internal_severity. A
    // user workload, or anything calling an address nobody manages, is what a command-and-control
    // beacon looks like.
    const bool from_server = (s.flags & FlagUser) == 0;
    const bool to_inventory = destinations[key_host(key)].workload != kNone;
    if (from_server && to_inventory && !strings.name(s.workload).empty()) {
        if (!b->reported) {
            b->reported = true;
            ++totals.scheduled_jobs;
        }
        return;
    }
    // One finding per (source, destination) beacon: a series not reported yet fires even while
    // the source is quiet for this rule (another destination's beacon was just reported); a
    // reported one again only when the quiet period allows (a beacon that goes on is reported
    // again every quiet_seconds, on the source's incident).
    if (b->reported) {
        if (!may_fire(s, Rule::Beaconing, t, seconds(c.quiet_seconds))) {
            return;
        }
    } else {
        if (exempt(s, t)) {
            ++totals.exempted;
            return;
        }
        s.quiet_until[static_cast<std::size_t>(Rule::Beaconing)] = t + seconds(c.quiet_seconds);
    }
    b->reported = true;
    auto f = make(Rule::Beaconing, from_server && to_inventory ? c.internal_severity : c.severity, b->first_ns, t);
    f.distinct_hosts = f.distinct_ports = f.distinct_targets = 1;
    f.score = std::max(0.0, 1.0 - stats.dispersion);
    char text[128];
    std::snprintf(text, sizeof text, " ±%.0f %% (%zu intervals: median absolute deviation %.0f %%, skew %.2f)",
                  100.0 * stats.jitter, stats.count, 100.0 * stats.dispersion, stats.skew);
    f.explanation = who(s) + " retried " + target_text(key) + " " + std::to_string(b->attempts) +
                    " times every " + format_duration(static_cast<std::int64_t>(stats.median_ms * 1e6)) +
                    text;
    f.sample_targets.push_back(target_text(key));
    accept(id, std::move(f));
}

} // namespace bulkhead::analyzer
