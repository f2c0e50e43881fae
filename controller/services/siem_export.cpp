#include "controller/services/siem_export.hpp"

#include "controller/evidence/evidence_records.hpp"
#include "controller/services/service_support.hpp"
#include "controller/siem/siem_formats.hpp"
#include "controller/siem/siem_rate_limiter.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <map>

namespace bulkhead::controller {

namespace {

constexpr std::array kSources{SiemSource::Checkpoints, SiemSource::Audit, SiemSource::Quarantines,
                              SiemSource::Incidents, SiemSource::Events};

bool reads(const siem::SiemDestination& destination, SiemSource source) {
    using K = siem::SiemRecordKind;
    switch (source) {
    case SiemSource::Checkpoints:
        return destination.wants(K::Checkpoints);
    case SiemSource::Audit:
        return destination.wants(K::Audit);
    case SiemSource::Quarantines:
        return destination.wants(K::Quarantines);
    case SiemSource::Incidents:
        return destination.wants(K::Incidents);
    case SiemSource::Events:
        return destination.wants(K::Drops) || destination.wants(K::AllowedFlows);
    }
    return false;
}

std::optional<evidence::Stream> chain_of(SiemSource source) {
    switch (source) {
    case SiemSource::Audit:
        return evidence::Stream::Audit;
    case SiemSource::Quarantines:
        return evidence::Stream::Quarantines;
    case SiemSource::Incidents:
        return evidence::Stream::Incidents;
    case SiemSource::Events:
        return evidence::Stream::Drops;
    case SiemSource::Checkpoints:
        return std::nullopt;
    }
    return std::nullopt;
}

std::string cursor_key(const std::string& destination, SiemSource source) {
    return "siem/" + destination + "/" + std::string(to_string(source));
}

std::optional<std::uint64_t> parse_u64(const std::string& text) {
    std::uint64_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size())
        return std::nullopt;
    return value;
}

}  // namespace

using PendingRecord = SiemExport::PendingRecord;

namespace {

std::string stable_id(const PendingRecord& record) {
    return std::visit(
        [&](const auto& subject) -> std::string {
            using T = std::decay_t<decltype(subject)>;
            if constexpr (std::is_same_v<T, StoredEvent>)
                return "drops/" + std::to_string(subject.id);
            else if constexpr (std::is_same_v<T, Incident>)
                return "incidents/" + std::to_string(subject.id) + "/v" + std::to_string(subject.version);
            else if constexpr (std::is_same_v<T, Quarantine>)
                return "quarantines/" + std::to_string(subject.id) + (subject.released_at ? "/released" : "");
            else if constexpr (std::is_same_v<T, AuditEntry>)
                return "audit/" + std::to_string(subject.id);
            else
                return "checkpoint/" + std::to_string(subject.checkpoint.at_ms);
        },
        record.subject);
}

siem::SiemRecord as_siem_record(const PendingRecord& record) {
    siem::SiemRecord out;
    out.id = record.id;
    std::visit([&](const auto& subject) { out.subject = &subject; }, record.subject);
    return out;
}

}  // namespace

std::string_view to_string(SiemSource source) {
    switch (source) {
    case SiemSource::Checkpoints:
        return "checkpoints";
    case SiemSource::Audit:
        return "audit";
    case SiemSource::Quarantines:
        return "quarantines";
    case SiemSource::Incidents:
        return "incidents";
    case SiemSource::Events:
        return "events";
    }
    return "unknown";
}

struct SiemExport::Destination {
    siem::SiemDestination config;
    std::unique_ptr<siem::SyslogSender> sender;
    siem::TokenBucket bucket;
    std::map<SiemSource, std::uint64_t> cursors;  // touched by the thread; copied under mutex for status

    std::mutex mutex;
    std::condition_variable wake;
    bool stopping = false;
    bool woken = false;
    std::string state = "starting";
    std::uint64_t delivered = 0;
    std::uint64_t failures = 0;
    std::uint64_t rate_limited = 0;
    std::string last_error, last_error_kind;
    std::optional<TimeMs> last_delivery_at;
    std::chrono::milliseconds backoff{0};
    std::thread worker;

    Destination(siem::SiemDestination destination, std::unique_ptr<siem::SyslogSender> s, TimeMs now)
        : config(std::move(destination)), sender(std::move(s)), bucket(config.rate_limit_per_second, 0, now) {}
};

SiemExport::SiemExport(SiemExportOptions options, EventRepository& events, EvidenceRepository& evidence,
                       SettingsRepository& settings, Clock clock, SenderFactory make_sender)
    : options_(std::move(options)),
      events_(events),
      evidence_(evidence),
      settings_(settings),
      clock_(std::move(clock)),
      make_sender_(std::move(make_sender)) {
    if (!make_sender_) {
        make_sender_ = [sender_options = options_.sender](const siem::SiemDestination& destination) {
            return siem::make_syslog_sender(destination, sender_options);
        };
    }
    for (const auto& destination : options_.destinations)
        destinations_.push_back(std::make_unique<Destination>(destination, make_sender_(destination), clock_()));
}

SiemExport::~SiemExport() { stop(); }

std::expected<std::uint64_t, std::string> SiemExport::head_of(SiemSource source) {
    if (source == SiemSource::Checkpoints) {
        // Checkpoints are ordered by their time; a new destination starts with the next one.
        return static_cast<std::uint64_t>(clock_());
    }
    if (source == SiemSource::Events) {
        auto last = events_.last_event_id();
        if (!last)
            return std::unexpected(last.error().message);
        return static_cast<std::uint64_t>(*last);
    }
    auto head = evidence_.evidence_head(*chain_of(source));
    if (!head)
        return std::unexpected(head.error().message);
    return head->sequence;
}

std::expected<void, std::string> SiemExport::start() {
    for (auto& destination : destinations_) {
        for (const auto source : kSources) {
            if (!reads(destination->config, source))
                continue;
            const std::string key = cursor_key(destination->config.name, source);
            auto stored = settings_.get_setting(key);
            if (!stored)
                return std::unexpected("SIEM " + destination->config.name + ": cannot read " + key + ": " +
                                       stored.error().message);
            if (*stored) {
                auto value = parse_u64(**stored);
                if (!value)
                    return std::unexpected("SIEM " + destination->config.name + ": " + key + " holds \"" + **stored +
                                           "\", not a position");
                destination->cursors[source] = *value;
                continue;
            }
            auto head = head_of(source);
            if (!head)
                return std::unexpected("SIEM " + destination->config.name + ": " + head.error());
            if (auto saved = settings_.put_setting(key, std::to_string(*head)); !saved)
                return std::unexpected("SIEM " + destination->config.name + ": cannot store " + key + ": " +
                                       saved.error().message);
            destination->cursors[source] = *head;
        }
    }
    for (auto& destination : destinations_) {
        Destination* d = destination.get();
        d->worker = std::thread([this, d] { run(*d); });
        spdlog::info("SIEM {}: {} {} to {}", d->config.name, siem::to_string(d->config.format),
                     siem::to_string(d->config.transport),
                     d->config.address ? d->config.address->host + ":" + std::to_string(d->config.address->port)
                                       : d->config.path);
    }
    return {};
}

void SiemExport::stop() {
    for (auto& destination : destinations_) {
        {
            std::lock_guard lock(destination->mutex);
            destination->stopping = true;
        }
        destination->wake.notify_all();
    }
    for (auto& destination : destinations_) {
        if (destination->worker.joinable())
            destination->worker.join();
    }
}

void SiemExport::wake() {
    for (auto& destination : destinations_) {
        {
            std::lock_guard lock(destination->mutex);
            destination->woken = true;
        }
        destination->wake.notify_all();
    }
}

void SiemExport::run(Destination& d) {
    for (;;) {
        {
            std::lock_guard lock(d.mutex);
            if (d.stopping)
                break;
        }
        const bool delivered = deliver_once(d);
        std::unique_lock lock(d.mutex);
        if (d.stopping)
            break;
        if (d.backoff.count() > 0) {
            // Failing: wait, then try the same records again (the cursor did not move).
            d.wake.wait_for(lock, d.backoff, [&] { return d.stopping; });
            continue;
        }
        if (!delivered) {
            d.wake.wait_for(lock, options_.poll, [&] { return d.stopping || d.woken; });
            d.woken = false;
        }
    }
    d.sender->close();
}

std::expected<std::vector<SiemExport::PendingRecord>, std::string> SiemExport::read(SiemSource source,
                                                                                      std::uint64_t after,
                                                                                      std::size_t limit) {
    std::vector<PendingRecord> out;
    if (source == SiemSource::Events) {
        EventQuery query;
        query.after_id = static_cast<std::int64_t>(after);
        query.newest_first = false;
        query.limit = std::min<std::size_t>(limit, 10'000);
        query.parse_documents = false;  // the formats need a few members: restore_upload_fields
        ArchivedEvents* archive = archive_.load();
        const bool archived = archive != nullptr && static_cast<std::int64_t>(after) < archive->archived_through();
        auto events = archived ? archive->query_archived(query) : events_.query_events(query);
        if (!events)
            return std::unexpected(events.error().message);
        out.reserve(events->size());
        for (auto& event : *events) {
            restore_upload_fields(event);  // sport, ingress interface and MAC for the formats
            PendingRecord record;
            record.position = static_cast<std::uint64_t>(event.id);
            record.at = event.received_at;
            record.subject = std::move(event);
            out.push_back(std::move(record));
        }
    } else if (source == SiemSource::Checkpoints) {
        auto lines = evidence_.evidence_checkpoints(static_cast<TimeMs>(after) + 1, limit);
        if (!lines)
            return std::unexpected(lines.error().message);
        for (const auto& line : *lines) {
            auto checkpoint = evidence::checkpoint_from_json_line(line);
            if (!checkpoint) {
                spdlog::warn("SIEM: a stored checkpoint cannot be read and is not exported: {}", checkpoint.error());
                continue;
            }
            PendingRecord record;
            record.position = static_cast<std::uint64_t>(checkpoint->checkpoint.at_ms);
            record.at = checkpoint->checkpoint.at_ms;
            record.subject = std::move(*checkpoint);
            out.push_back(std::move(record));
        }
    } else {
        auto records = evidence_.evidence_records(*chain_of(source), after, limit);
        if (!records)
            return std::unexpected(records.error().message);
        for (const auto& stored : *records) {
            PendingRecord record;
            record.position = stored.sequence;
            bool decoded = false;
            if (source == SiemSource::Audit) {
                if (auto entry = evidence::audit_from_record(stored.record)) {
                    record.at = entry->at;
                    record.subject = std::move(*entry);
                    decoded = true;
                }
            } else if (source == SiemSource::Incidents) {
                if (auto incident = evidence::incident_from_record(stored.record)) {
                    record.at = incident->updated_at;
                    record.subject = std::move(*incident);
                    decoded = true;
                }
            } else if (auto quarantine = evidence::quarantine_from_record(stored.record)) {
                record.at = quarantine->released_at.value_or(quarantine->created_at);
                record.subject = std::move(*quarantine);
                decoded = true;
            }
            if (!decoded) {
                // Only a damaged store gets here (bulkheadctl evidence verify names the record);
                // it must not hold back everything after it.
                spdlog::warn("SIEM: {} record {} cannot be read and is not exported", to_string(source),
                             stored.sequence);
                continue;
            }
            out.push_back(std::move(record));
        }
        // A page of undecodable records still moves the cursor past them.
        if (out.empty() && !records->empty()) {
            PendingRecord skip;
            skip.position = records->back().sequence;
            skip.skip_only = true;
            out.push_back(std::move(skip));
        }
    }
    for (auto& record : out) {
        if (!record.skip_only)
            record.id = stable_id(record);
    }
    return out;
}

void SiemExport::fail(Destination& d, std::string kind, std::string message) {
    std::lock_guard lock(d.mutex);
    ++d.failures;
    if (d.state != "failing" || d.last_error != message)
        spdlog::warn("SIEM {}: {} ({}); retrying, nothing is skipped", d.config.name, message, kind);
    d.state = "failing";
    d.last_error = std::move(message);
    d.last_error_kind = std::move(kind);
    d.backoff = d.backoff.count() == 0 ? options_.first_backoff : std::min(d.backoff * 2, options_.max_backoff);
}

bool SiemExport::deliver_once(Destination& d) {
    bool delivered_any = false;
    for (const auto source : kSources) {
        if (!reads(d.config, source))
            continue;
        TimeMs now = clock_();
        std::uint32_t allowed = d.bucket.available(now);
        if (allowed == 0) {
            const TimeMs wait = std::max<TimeMs>(d.bucket.wait_for(1, now), 1);
            std::unique_lock lock(d.mutex);
            ++d.rate_limited;
            if (d.wake.wait_for(lock, std::chrono::milliseconds(wait), [&] { return d.stopping; }))
                return delivered_any;
            lock.unlock();
            now = clock_();
            allowed = d.bucket.available(now);
            if (allowed == 0)
                continue;
        }
        const std::uint64_t cursor = d.cursors[source];
        auto records = read(source, cursor, std::min<std::size_t>(options_.batch, allowed));
        if (!records) {
            fail(d, "store", "cannot read " + std::string(to_string(source)) + ": " + records.error());
            return delivered_any;
        }
        if (records->empty())
            continue;
        std::vector<std::string> messages;
        messages.reserve(records->size());
        for (const auto& record : *records) {
            if (record.skip_only)
                continue;
            const siem::SiemRecord siem_record = as_siem_record(record);
            const auto kind = siem::record_kind(siem_record);
            if (!kind || !d.config.wants(*kind))
                continue;  // enforcer lifecycle events; drops for an allowed-flows-only destination
            auto body = siem::format_record(d.config.format, siem_record);
            if (!body) {
                spdlog::warn("SIEM {}: {} cannot be written as {} and is not exported: {}", d.config.name, record.id,
                             siem::to_string(d.config.format), body.error());
                continue;
            }
            siem::SyslogEntry entry;
            entry.severity = siem::syslog_severity(siem::record_severity(siem_record));
            entry.time = record.at;
            entry.msgid = siem::event_class_id(siem_record);
            entry.stable_id = record.id;
            entry.body = std::move(*body);
            messages.push_back(siem::rfc5424_message(options_.identity, entry));
        }
        if (!messages.empty()) {
            if (auto sent = d.sender->send(messages); !sent) {
                fail(d, std::string(siem::to_string(sent.error().kind)), sent.error().message);
                return delivered_any;
            }
            if (auto flushed = d.sender->flush(); !flushed) {
                fail(d, std::string(siem::to_string(flushed.error().kind)), flushed.error().message);
                return delivered_any;
            }
            d.bucket.take(static_cast<std::uint32_t>(messages.size()), clock_());
        }
        const std::uint64_t position = records->back().position;
        if (auto saved = settings_.put_setting(cursor_key(d.config.name, source), std::to_string(position)); !saved) {
            fail(d, "store", "cannot store the position of " + std::string(to_string(source)) + ": " +
                                 saved.error().message);
            return delivered_any;
        }
        std::lock_guard lock(d.mutex);
        d.cursors[source] = position;
        d.delivered += messages.size();
        if (!messages.empty())
            d.last_delivery_at = now;
        if (d.state != "delivering" && d.state != "starting")
            spdlog::info("SIEM {}: delivering again", d.config.name);
        d.state = "delivering";
        d.last_error.clear();
        d.last_error_kind.clear();
        d.backoff = std::chrono::milliseconds(0);
        delivered_any = true;
    }
    return delivered_any;
}

std::vector<SiemDestinationStatus> SiemExport::status() {
    std::vector<SiemDestinationStatus> out;
    for (auto& destination : destinations_) {
        Destination& d = *destination;
        SiemDestinationStatus status;
        status.name = d.config.name;
        status.transport = siem::to_string(d.config.transport);
        status.format = siem::to_string(d.config.format);
        status.address = d.config.address ? d.config.address->host + ":" + std::to_string(d.config.address->port)
                                          : d.config.path;
        std::map<SiemSource, std::uint64_t> cursors;
        {
            std::lock_guard lock(d.mutex);
            status.state = d.state;
            status.delivered = d.delivered;
            status.failures = d.failures;
            status.rate_limited = d.rate_limited;
            status.last_error = d.last_error;
            status.last_error_kind = d.last_error_kind;
            status.last_delivery_at = d.last_delivery_at;
            cursors = d.cursors;
        }
        for (const auto& [source, cursor] : cursors) {
            SiemSourceBacklog backlog{source, cursor, cursor};
            if (source == SiemSource::Checkpoints) {
                if (auto pending = evidence_.evidence_checkpoints(static_cast<TimeMs>(cursor) + 1, 100'000)) {
                    backlog.head = cursor + pending->size();  // a count, not a time: what is left
                    status.pending += pending->size();
                }
            } else if (auto head = head_of(source); head && *head > cursor) {
                backlog.head = *head;
                status.pending += *head - cursor;
            }
            if (backlog.head > cursor) {
                if (auto first = read(source, cursor, 1); first && !first->empty() && !first->front().skip_only) {
                    const TimeMs at = first->front().at;
                    if (!status.oldest_pending_at || at < *status.oldest_pending_at)
                        status.oldest_pending_at = at;
                }
            }
            status.sources.push_back(backlog);
        }
        out.push_back(std::move(status));
    }
    return out;
}

nlohmann::json siem_status_json(const std::vector<SiemDestinationStatus>& destinations, TimeMs now) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& d : destinations) {
        nlohmann::json sources = nlohmann::json::array();
        for (const auto& s : d.sources)
            sources.push_back({{"source", to_string(s.source)}, {"delivered_through", s.delivered_through}, {"head", s.head}});
        out.push_back({{"name", d.name},
                       {"transport", d.transport},
                       {"format", d.format},
                       {"address", d.address},
                       {"state", d.state},
                       {"pending", d.pending},
                       {"oldest_pending_at", d.oldest_pending_at ? nlohmann::json(format_time_ms(*d.oldest_pending_at))
                                                                 : nlohmann::json(nullptr)},
                       {"oldest_pending_age_ms", d.oldest_pending_at ? nlohmann::json(std::max<TimeMs>(0, now - *d.oldest_pending_at))
                                                                     : nlohmann::json(nullptr)},
                       {"delivered", d.delivered},
                       {"failures", d.failures},
                       {"rate_limited", d.rate_limited},
                       {"last_error", d.last_error},
                       {"last_error_kind", d.last_error_kind},
                       {"last_delivery_at", d.last_delivery_at ? nlohmann::json(format_time_ms(*d.last_delivery_at))
                                                               : nlohmann::json(nullptr)},
                       {"sources", sources}});
    }
    return out;
}

std::string siem_metrics_text(const std::vector<SiemDestinationStatus>& destinations, TimeMs now) {
    if (destinations.empty())
        return {};
    std::string out;
    const auto family = [&](std::string_view name, std::string_view type, std::string_view help, auto value) {
        out += "# HELP " + std::string(name) + " " + std::string(help) + "\n";
        out += "# TYPE " + std::string(name) + " " + std::string(type) + "\n";
        for (const auto& d : destinations)
            out += std::string(name) + "{destination=\"" + d.name + "\"} " + std::to_string(value(d)) + "\n";
    };
    family("bulkhead_siem_pending_records", "gauge", "Records stored but not yet delivered to the SIEM destination.",
           [](const SiemDestinationStatus& d) { return d.pending; });
    family("bulkhead_siem_oldest_pending_age_seconds", "gauge",
           "Age of the oldest record not yet delivered to the SIEM destination (0 when none).",
           [&](const SiemDestinationStatus& d) {
               return d.oldest_pending_at ? std::max<TimeMs>(0, now - *d.oldest_pending_at) / 1000 : 0;
           });
    family("bulkhead_siem_delivered_records_total", "counter", "Records delivered to the SIEM destination by this process.",
           [](const SiemDestinationStatus& d) { return d.delivered; });
    family("bulkhead_siem_failures_total", "counter", "Failed sends to the SIEM destination (each is retried).",
           [](const SiemDestinationStatus& d) { return d.failures; });
    family("bulkhead_siem_up", "gauge", "1 while the SIEM destination's last send succeeded, 0 while it fails.",
           [](const SiemDestinationStatus& d) { return d.state == "failing" ? 0 : 1; });
    return out;
}

}  // namespace bulkhead::controller
