#include "controller/services/event_service.hpp"

#include "controller/services/event_batch.hpp"
#include "policies/json_reader.hpp"

#include <algorithm>
#include <map>

namespace bulkhead::controller {

using nlohmann::json;

EventService::EventService(EventOptions options, EventRepository& events, AnalysisService& analysis, EventBus& bus,
                           Clock clock)
    : options_(options), events_(events), analysis_(analysis), bus_(bus), clock_(std::move(clock)) {}

EventService::IngestFigures EventService::ingest_figures() const {
    return IngestFigures{batches_.load(std::memory_order_relaxed), stored_.load(std::memory_order_relaxed),
                         drops_stored_.load(std::memory_order_relaxed), duplicates_.load(std::memory_order_relaxed)};
}

ServiceResult EventService::ingest_events(const Caller& caller, const std::string& id, std::string_view body) {
    if (auto own = check_own_channel(caller, id); !own) {
        return std::unexpected(own.error());
    }
    const std::int64_t received_ns = wall_clock_ns();
    const TimeMs now = clock_();
    auto parsed = EventBatchParser(EventBatchLimits{options_.max_events_per_batch}).parse(body, id, now);
    if (!parsed) {
        if (parsed.error().code == "invalid-json") {
            // The fast parser says only that the text is not JSON; the API's reader says
            // where and why, as every other endpoint does.
            if (auto diagnosed = policy::read_json(body, "body"); !diagnosed) {
                const auto& first = diagnosed.error().front();
                return std::unexpected(service_error(ErrorKind::BadRequest, "invalid-json", first.message,
                                             json{{"pointer", first.pointer},
                                                  {"errors", policy::diagnostics_to_json(diagnosed.error())}}));
            }
        }
        const auto& p = parsed.error();
        return std::unexpected(service_error(p.status == 413 ? ErrorKind::TooLarge : ErrorKind::BadRequest, p.code,
                                             p.message, json{{"pointer", p.pointer}}));
    }
    std::vector<StoredEvent>& records = *parsed;
    if (!records.empty() && records.front().path.enforcer_sent_ns > 0) {
        const std::int64_t offset_ms = (records.front().path.enforcer_sent_ns - received_ns) / 1'000'000;
        for (auto& record : records)
            record.clock_offset_ms = offset_ms;
    }
    auto inserted = events_.insert_events(records);
    if (!inserted) {
        return std::unexpected(from_store(inserted.error()));
    }
    batches_.fetch_add(1, std::memory_order_relaxed);
    stored_.fetch_add(inserted->accepted, std::memory_order_relaxed);
    duplicates_.fetch_add(inserted->duplicates, std::memory_order_relaxed);
    // Live view and detection see only events stored now for the first time; a retried
    // batch changes nothing.
    if (inserted->accepted > 0) {
        const std::int64_t stored_ns = wall_clock_ns();
        std::vector<StoredEvent> fresh;
        fresh.reserve(inserted->accepted);
        std::uint64_t drops = 0;
        for (std::size_t i = 0; i < records.size(); ++i) {
            if (inserted->ids[i] != 0) {
                records[i].id = inserted->ids[i];
                records[i].path.controller_received_ns = received_ns;
                records[i].path.stored_ns = stored_ns;
                drops += is_blocked_type(records[i].type) ? 1 : 0;
                fresh.push_back(std::move(records[i]));
            }
        }
        drops_stored_.fetch_add(drops, std::memory_order_relaxed);
        if (bus_.subscribers() > 0) {
            json live = json::array();
            for (auto& e : fresh) {
                if (is_blocked_type(e.type)) {
                    e.document = json::parse(e.document_text, nullptr, false);
                    live.push_back(event_json(e, options_.clock_offset_threshold_ms));
                }
            }
            if (!live.empty()) {
                bus_.publish("drops", live);
            }
        }
        analysis_.submit(std::move(fresh));
    }
    return json{{"accepted", inserted->accepted},
                {"duplicates", inserted->duplicates},
                {"through_seq", inserted->through_seq}};
}

ServiceResult EventService::query_events(const EventQuery& query) {
    auto events = events_.query_events(query);
    if (!events) {
        return std::unexpected(from_store(events.error()));
    }
    // Older than the hot tier: the archive's segments hold the ids up to archived_through.
    if (archive_ != nullptr && archive_->archived_through() > 0) {
        if (query.newest_first && events->size() < query.limit) {
            EventQuery older = query;
            older.limit = query.limit - events->size();
            auto archived = archive_->query_archived(older);
            if (!archived)
                return std::unexpected(from_store(archived.error()));
            events->insert(events->end(), std::make_move_iterator(archived->begin()),
                           std::make_move_iterator(archived->end()));
        } else if (!query.newest_first && query.after_id.value_or(0) < archive_->archived_through()) {
            auto archived = archive_->query_archived(query);
            if (!archived)
                return std::unexpected(from_store(archived.error()));
            const std::size_t room = query.limit - std::min(query.limit, archived->size());
            if (events->size() > room)
                events->resize(room);
            archived->insert(archived->end(), std::make_move_iterator(events->begin()),
                             std::make_move_iterator(events->end()));
            *events = std::move(*archived);
        }
    }
    json list = json::array();
    std::int64_t last_id = 0;
    for (const auto& e : *events) {
        list.push_back(event_json(e, options_.clock_offset_threshold_ms));
        last_id = e.id;
    }
    json result{{"events", list}};
    if (events->size() == query.limit) {
        // The cursor of the next page in the same order: newest first pages backwards.
        result[query.newest_first ? "next_before_id" : "next_after_id"] = last_id;
    }
    return result;
}

ServiceResult EventService::count_events(std::int64_t from_ns, std::int64_t to_ns, std::int64_t bucket_ns,
                                          const EventQuery& filter) {
    // A range older than the hot tier is counted in the archive too. The database counts only
    // ids above the archive's last, so an event sealed but not yet removed counts once.
    const std::int64_t archived = archive_ != nullptr ? archive_->archived_through() : 0;
    EventQuery database_filter = filter;
    if (archived > 0) {
        database_filter.after_id = std::max(filter.after_id.value_or(0), archived);
    }
    auto buckets = events_.count_events(from_ns, to_ns, bucket_ns, database_filter);
    if (!buckets) {
        return std::unexpected(from_store(buckets.error()));
    }
    if (archived > 0) {
        EventQuery archive_filter = filter;
        archive_filter.through_id = std::min(filter.through_id.value_or(archived), archived);
        auto older = archive_->count_archived(from_ns, to_ns, bucket_ns, archive_filter);
        if (!older) {
            return std::unexpected(from_store(older.error()));
        }
        std::map<std::int64_t, std::uint64_t> merged;
        for (const auto& b : *older) {
            merged[b.start_ns] += b.events;
        }
        for (const auto& b : *buckets) {
            merged[b.start_ns] += b.events;
        }
        buckets->clear();
        for (const auto& [start, events] : merged) {
            buckets->push_back(CountBucket{start, events});
        }
    }
    json list = json::array();
    for (const auto& b : *buckets) {
        list.push_back(json{{"start_ns", b.start_ns}, {"events", b.events}});
    }
    return json{{"from_ns", from_ns}, {"to_ns", to_ns}, {"bucket_ns", bucket_ns}, {"buckets", list}};
}


}  // namespace bulkhead::controller
