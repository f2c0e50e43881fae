#include "controller/store/store_sql.hpp"

#include <algorithm>
#include <optional>

namespace bulkhead::controller::sql {
namespace {

// Collects "column op $n" conditions and their parameters.
class Builder {
  public:
    std::string param(Value value) {
        params_.push_back(std::move(value));
        // Appended, not `"$" + std::to_string(...)`: GCC 12 at -O2/-O3 reports a false
        // -Wrestrict on operator+(const char*, std::string&&) (GCC PR 105329).
        std::string placeholder = "$";
        placeholder += std::to_string(params_.size());
        return placeholder;
    }
    void where(std::string condition) { conditions_.push_back(std::move(condition)); }
    std::string where_clause() const {
        std::string out;
        for (std::size_t i = 0; i < conditions_.size(); ++i) {
            out += i == 0 ? " WHERE " : " AND ";
            out += conditions_[i];
        }
        return out;
    }
    std::vector<Value> take_params() { return std::move(params_); }

  private:
    std::vector<Value> params_;
    std::vector<std::string> conditions_;
};

std::int64_t clamp_limit(std::size_t limit) {
    return static_cast<std::int64_t>(std::min(limit, kMaxLimit));
}

// Where matching events come from. A workload filter has its own index (events by
// workload and time). Otherwise, with a term filter (the most selective present, in the
// order address, port, reason) the scan runs over that term's minutes in event_terms,
// each minute a range of the time index; else over events alone. Every filter is still
// checked on the event's own columns (event_filters).
std::string event_source(Builder& b, const EventQuery& q) {
    std::optional<std::string> term;
    if (q.workload)
        return " FROM events";
    if (q.address)
        term = "a:" + *q.address;
    else if (q.port)
        term = "p:" + std::to_string(*q.port);
    else if (q.reason)
        term = "r:" + *q.reason;
    if (!term)
        return " FROM events";
    b.where("t.term = " + b.param(*term));
    if (q.from_ns)
        b.where("t.minute >= " + b.param(term_bucket(*q.from_ns)));
    if (q.to_ns)
        b.where("t.minute <= " + b.param(term_bucket(*q.to_ns)));
    const std::string width = std::to_string(kTermBucketNs);
    b.where("time_ns >= t.minute * " + width);
    b.where("time_ns < (t.minute + 1) * " + width);
    // CROSS JOIN: SQLite keeps event_terms as the outer loop (PostgreSQL plans it freely).
    return " FROM event_terms t CROSS JOIN events";
}

// The event filters shared by select_events and count_events, id bounds included (paging
// there; the event service's split between the archive's ids and the database's here).
void event_filters(Builder& b, const EventQuery& q) {
    if (q.from_ns)
        b.where("time_ns >= " + b.param(*q.from_ns));
    if (q.to_ns)
        b.where("time_ns < " + b.param(*q.to_ns));
    if (q.workload)
        b.where("workload = " + b.param(*q.workload));
    if (q.address) {
        // One parameter used twice; src and dst are indexed separately so both backends can
        // answer it as a union of two index lookups.
        const auto p = b.param(*q.address);
        b.where("(src = " + p + " OR dst = " + p + ")");
    }
    if (q.port)
        b.where("dport = " + b.param(std::int64_t{*q.port}));
    if (q.reason)
        b.where("reason = " + b.param(*q.reason));
    if (q.enforcer)
        b.where("enforcer = " + b.param(*q.enforcer));
    if (q.after_id)
        b.where("id > " + b.param(*q.after_id));
    if (q.through_id)
        b.where("id <= " + b.param(*q.through_id));
}

} // namespace

std::int64_t term_bucket(std::int64_t time_ns) {
    std::int64_t q = time_ns / kTermBucketNs;
    if (time_ns % kTermBucketNs < 0)
        --q;
    return q;
}

std::vector<std::string> event_terms(const StoredEvent& e) {
    std::vector<std::string> terms;
    terms.reserve(4);
    if (!e.src.empty())
        terms.push_back("a:" + e.src);
    if (!e.dst.empty() && e.dst != e.src)
        terms.push_back("a:" + e.dst);
    if (e.dport)
        terms.push_back("p:" + std::to_string(*e.dport));
    if (!e.reason.empty())
        terms.push_back("r:" + e.reason);
    return terms;
}

Query select_events(const EventQuery& query) {
    Builder b;
    const std::string source = event_source(b, query);
    event_filters(b, query);
    if (query.type)
        b.where("type = " + b.param(*query.type));
    std::string text = "SELECT " + std::string(kEventColumns) + source + b.where_clause();
    text += query.newest_first ? " ORDER BY id DESC" : " ORDER BY id";
    text += " LIMIT " + b.param(clamp_limit(query.limit));
    return {std::move(text), b.take_params()};
}

Query count_events(std::int64_t from_ns, std::int64_t to_ns, std::int64_t bucket_ns,
                   const EventQuery& filter) {
    Builder b;
    const auto from = b.param(from_ns);
    const auto width = b.param(bucket_ns);
    b.where("time_ns >= " + from);
    b.where("time_ns < " + b.param(to_ns));
    EventQuery ranged = filter;
    ranged.from_ns = from_ns;
    ranged.to_ns = to_ns;
    const std::string source = event_source(b, ranged);
    event_filters(b, filter);
    b.where("type = " + b.param(filter.type.value_or("drop")));
    // Integer division on BIGINT operands truncates in both backends; time_ns >= from_ns
    // keeps the dividend non-negative, so truncation is floor.
    std::string text = "SELECT (time_ns - " + from + ") / " + width +
                       " AS bucket, SUM(event_count)" + source + b.where_clause() +
                       " GROUP BY bucket ORDER BY bucket";
    return {std::move(text), b.take_params()};
}

Query select_incidents(const IncidentQuery& query) {
    Builder b;
    if (query.state)
        b.where("state = " + b.param(std::string(to_string(*query.state))));
    if (query.source_workload)
        b.where("source_workload = " + b.param(*query.source_workload));
    if (query.before_id)
        b.where("id < " + b.param(*query.before_id));
    std::string text = "SELECT " + std::string(kIncidentColumns) + " FROM incidents" +
                       b.where_clause() + " ORDER BY id DESC LIMIT " +
                       b.param(clamp_limit(query.limit));
    return {std::move(text), b.take_params()};
}

Query select_audit(const AuditQuery& query) {
    Builder b;
    if (query.from)
        b.where("at >= " + b.param(*query.from));
    if (query.to)
        b.where("at < " + b.param(*query.to));
    if (query.actor)
        b.where("actor = " + b.param(*query.actor));
    if (query.action)
        b.where("action = " + b.param(*query.action));
    if (query.before_id)
        b.where("id < " + b.param(*query.before_id));
    std::string text = "SELECT " + std::string(kAuditColumns) + " FROM audit_log" +
                       b.where_clause() + " ORDER BY id DESC LIMIT " +
                       b.param(clamp_limit(query.limit));
    return {std::move(text), b.take_params()};
}

} // namespace bulkhead::controller::sql
