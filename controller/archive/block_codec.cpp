#include "controller/archive/block_codec.hpp"

#include "controller/archive/byte_io.hpp"

#include <array>
#include <charconv>
#include <deque>
#include <unordered_map>

namespace bulkhead::archive {

using controller::StoredEvent;

namespace {

constexpr std::array<std::int64_t, 19> kPow10{1LL,
                                              10LL,
                                              100LL,
                                              1'000LL,
                                              10'000LL,
                                              100'000LL,
                                              1'000'000LL,
                                              10'000'000LL,
                                              100'000'000LL,
                                              1'000'000'000LL,
                                              10'000'000'000LL,
                                              100'000'000'000LL,
                                              1'000'000'000'000LL,
                                              10'000'000'000'000LL,
                                              100'000'000'000'000LL,
                                              1'000'000'000'000'000LL,
                                              10'000'000'000'000'000LL,
                                              100'000'000'000'000'000LL,
                                              1'000'000'000'000'000'000LL};

// Wrapping difference and sum: deltas between unrelated 64-bit values must not overflow.
std::int64_t minus(std::int64_t value, std::int64_t base) {
    return static_cast<std::int64_t>(static_cast<std::uint64_t>(value) - static_cast<std::uint64_t>(base));
}
std::int64_t plus(std::int64_t base, std::int64_t delta) {
    return static_cast<std::int64_t>(static_cast<std::uint64_t>(base) + static_cast<std::uint64_t>(delta));
}

// ---- integer streams: [u8 power-of-ten scale][zig-zag varints / 10^scale...], empty when no
// values. Kernel timestamps are microseconds written as nanoseconds: dividing the deltas by
// the common 1000 saves a varint byte per record.
class IntStreamWriter {
public:
    void add(std::int64_t value) { values_.push_back(value); }
    void write(std::string& out) const {
        std::string stream;
        if (!values_.empty()) {
            std::size_t scale = kPow10.size() - 1;
            for (const auto value : values_) {
                while (scale > 0 && value % kPow10[scale] != 0) {
                    --scale;
                }
                if (scale == 0) {
                    break;
                }
            }
            bytes::put_u8(stream, static_cast<std::uint8_t>(scale));
            for (const auto value : values_) {
                bytes::put_svarint(stream, value / kPow10[scale]);
            }
        }
        bytes::put_bytes(out, stream);
    }

private:
    std::vector<std::int64_t> values_;
};

class IntStreamReader {
public:
    bool open(bytes::Reader& block) {
        std::string_view stream;
        if (!block.bytes(stream)) {
            return false;
        }
        reader_ = bytes::Reader(stream);
        if (!stream.empty()) {
            std::uint8_t scale = 0;
            if (!reader_.u8(scale) || scale >= kPow10.size()) {
                return false;
            }
            scale_ = static_cast<std::uint64_t>(kPow10[scale]);
        }
        return true;
    }
    bool next(std::int64_t& value) {
        std::int64_t scaled = 0;
        if (!reader_.svarint(scaled)) {
            return false;
        }
        value = static_cast<std::int64_t>(static_cast<std::uint64_t>(scaled) * scale_);
        return true;
    }

private:
    bytes::Reader reader_;
    std::uint64_t scale_ = 1;
};

// ---- IPv4 text that re-prints exactly ("10.0.0.1", never "010.0.0.1")
bool parse_canonical_ipv4(std::string_view text, std::uint32_t& out) {
    std::uint32_t value = 0;
    std::size_t i = 0;
    for (int part_index = 0; part_index < 4; ++part_index) {
        if (part_index > 0) {
            if (i >= text.size() || text[i] != '.') {
                return false;
            }
            ++i;
        }
        const std::size_t start = i;
        std::uint32_t part = 0;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9' && i - start < 4) {
            part = part * 10 + static_cast<std::uint32_t>(text[i] - '0');
            ++i;
        }
        const std::size_t digits = i - start;
        if (digits == 0 || digits > 3 || part > 255 || (digits > 1 && text[start] == '0')) {
            return false;
        }
        value = (value << 8) | part;
    }
    out = value;
    return i == text.size();
}

std::string format_ipv4(std::uint32_t value) {
    char text[16];
    char* p = text;
    for (int shift = 24; shift >= 0; shift -= 8) {
        p = std::to_chars(p, text + sizeof text, (value >> shift) & 0xff).ptr;
        if (shift > 0) {
            *p++ = '.';
        }
    }
    return std::string(text, static_cast<std::size_t>(p - text));
}

// ---- string columns: a code per value, then
//   0            a new literal (next in the literal stream), added to the dictionary
//   1            a new canonical IPv4 address, as a delta from the previous new one
//   2 .. 2+P-1   equal to prediction p (something the decoder derives from columns already read)
//   2+P+i        dictionary entry i (entries numbered in order of first appearance)
constexpr std::uint64_t kNewLiteral = 0;
constexpr std::uint64_t kNewIpv4 = 1;
constexpr std::uint64_t kFirstPrediction = 2;

class StringColumnWriter {
public:
    explicit StringColumnWriter(std::size_t prediction_count)
        : dictionary_base_(kFirstPrediction + prediction_count) {}

    void add(std::string_view value, std::span<const std::string_view> predictions = {}) {
        for (std::size_t p = 0; p < predictions.size(); ++p) {
            if (predictions[p] == value) {
                bytes::put_varint(codes_, kFirstPrediction + p);
                return;
            }
        }
        if (const auto known = index_.find(value); known != index_.end()) {
            bytes::put_varint(codes_, dictionary_base_ + known->second);
            return;
        }
        if (std::uint32_t address = 0; parse_canonical_ipv4(value, address)) {
            bytes::put_varint(codes_, kNewIpv4);
            ipv4_deltas_.add(static_cast<std::int64_t>(address) - static_cast<std::int64_t>(last_ipv4_));
            last_ipv4_ = address;
        } else {
            bytes::put_varint(codes_, kNewLiteral);
            bytes::put_bytes(literals_, value);
        }
        index_.emplace(value, static_cast<std::uint32_t>(index_.size()));
    }

    void write(std::string& out) const {
        bytes::put_bytes(out, codes_);
        bytes::put_bytes(out, literals_);
        ipv4_deltas_.write(out);
    }

private:
    std::uint64_t dictionary_base_;
    std::unordered_map<std::string_view, std::uint32_t> index_;  // views into the caller's records
    std::string codes_;
    std::string literals_;
    IntStreamWriter ipv4_deltas_;
    std::uint32_t last_ipv4_ = 0;
};

class StringColumnReader {
public:
    explicit StringColumnReader(std::size_t prediction_count)
        : dictionary_base_(kFirstPrediction + prediction_count) {}

    bool open(bytes::Reader& block) {
        std::string_view codes, literals;
        if (!block.bytes(codes) || !block.bytes(literals) || !ipv4_deltas_.open(block)) {
            return false;
        }
        codes_ = bytes::Reader(codes);
        literals_ = bytes::Reader(literals);
        return true;
    }

    // `predict(p)` returns prediction p for the current record.
    template <typename Predict>
    bool next(Predict&& predict, std::string_view& out) {
        std::uint64_t code = 0;
        if (!codes_.varint(code)) {
            return false;
        }
        if (code >= dictionary_base_) {
            const std::uint64_t entry = code - dictionary_base_;
            if (entry >= dictionary_.size()) {
                return false;
            }
            out = dictionary_[static_cast<std::size_t>(entry)];
            return true;
        }
        if (code >= kFirstPrediction) {
            out = predict(static_cast<std::size_t>(code - kFirstPrediction));
            return true;
        }
        if (code == kNewIpv4) {
            std::int64_t delta = 0;
            if (!ipv4_deltas_.next(delta)) {
                return false;
            }
            last_ipv4_ = static_cast<std::uint32_t>(plus(last_ipv4_, delta));
            dictionary_.push_back(format_ipv4(last_ipv4_));
        } else {
            std::string_view literal;
            if (!literals_.bytes(literal)) {
                return false;
            }
            dictionary_.emplace_back(literal);
        }
        out = dictionary_.back();
        return true;
    }
    bool next(std::string_view& out) {
        return next([](std::size_t) { return std::string_view(); }, out);
    }

private:
    std::uint64_t dictionary_base_;
    bytes::Reader codes_;
    bytes::Reader literals_;
    IntStreamReader ipv4_deltas_;
    std::uint32_t last_ipv4_ = 0;
    std::deque<std::string> dictionary_;  // a deque: views handed out stay valid as it grows
};

// ---- contexts: per-enforcer state (each enforcer's counters and clock advance on their own,
// and uploads from several enforcers interleave in id order)
std::vector<std::uint32_t> enforcer_contexts(std::span<const std::string_view> enforcers, std::size_t& count) {
    std::unordered_map<std::string_view, std::uint32_t> seen;
    std::vector<std::uint32_t> contexts;
    contexts.reserve(enforcers.size());
    for (const auto name : enforcers) {
        contexts.push_back(seen.emplace(name, static_cast<std::uint32_t>(seen.size())).first->second);
    }
    count = seen.size();
    return contexts;
}

// ---- documents
constexpr char kStringSlot = '\x01';
constexpr char kNumberSlot = '\x02';

struct Slot {
    bool number = false;
    std::string_view text;  // a string's bytes between its quotes (escapes as written), or a number token
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_number_char(char c) {
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

// Splits a document into its template (everything but the values, each value replaced by a
// slot marker) and its slots. Object keys stay in the template. False when the text holds a
// marker byte or an unterminated string or a raw control byte in a string: the caller then
// stores it raw. Reconstruction is positional, so any text that tokenises round-trips.
bool tokenize(std::string_view doc, std::string& template_text, std::vector<Slot>& slots) {
    template_text.clear();
    slots.clear();
    std::size_t i = 0;
    const std::size_t n = doc.size();
    while (i < n) {
        const char c = doc[i];
        if (c == '"') {
            std::size_t j = i + 1;
            while (j < n && doc[j] != '"') {
                if (doc[j] == '\\') {
                    j += 2;
                } else if (static_cast<unsigned char>(doc[j]) < 0x20) {
                    return false;
                } else {
                    ++j;
                }
            }
            if (j >= n) {
                return false;
            }
            std::size_t k = j + 1;
            while (k < n && is_space(doc[k])) {
                ++k;
            }
            if (k < n && doc[k] == ':') {
                template_text.append(doc.substr(i, j + 1 - i));
            } else {
                template_text += kStringSlot;
                slots.push_back(Slot{false, doc.substr(i + 1, j - i - 1)});
            }
            i = j + 1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            std::size_t j = i + 1;
            while (j < n && is_number_char(doc[j])) {
                ++j;
            }
            template_text += kNumberSlot;
            slots.push_back(Slot{true, doc.substr(i, j - i)});
            i = j;
        } else if (c == kStringSlot || c == kNumberSlot) {
            return false;
        } else {
            template_text += c;
            ++i;
        }
    }
    return true;
}

// An integer that prints back to exactly these bytes: -?(0|[1-9][0-9]*), in int64, not "-0".
bool canonical_integer(std::string_view text, std::int64_t& value) {
    if (text.empty() || text.size() > 20) {
        return false;
    }
    const std::size_t digits_at = text[0] == '-' ? 1 : 0;
    if (digits_at == text.size()) {
        return false;
    }
    if (text[digits_at] == '0' && (text.size() > digits_at + 1 || digits_at == 1)) {
        return false;
    }
    const auto result = std::from_chars(text.data(), text.data() + text.size(), value);
    return result.ec == std::errc() && result.ptr == text.data() + text.size();
}

// What a document's string value may equal, in code order: the record's columns and its time
// as RFC 3339 text (the enforcer writes "time" from time_ns).
constexpr std::size_t kDocumentStringPredictions = 10;
// What a document's integer may be a small distance from, in code order: 0 the slot's previous
// value for this enforcer, then columns of the same record.
constexpr std::size_t kNumberPredictors = 8;
constexpr std::uint8_t kNumberLiteral = kNumberPredictors;  // the code for a non-canonical number

// A template: the encoder predicts from a StoredEvent, the decoder from the chain's fields.
template <typename Record>
void number_predictions(const Record& e, std::int64_t id, std::int64_t previous,
                        std::array<std::int64_t, kNumberPredictors>& out) {
    out[0] = previous;
    out[1] = e.time_ns;
    out[2] = e.time_ns / 1'000'000;  // "time_unix_ms", as the enforcer computes it
    out[3] = e.received_at;
    out[4] = static_cast<std::int64_t>(e.enforcer_seq);
    out[5] = e.dport ? static_cast<std::int64_t>(*e.dport) : 0;
    out[6] = static_cast<std::int64_t>(e.count);
    out[7] = id;
}

struct SlotWriter {
    bool number = false;
    StringColumnWriter strings{kDocumentStringPredictions};
    std::string number_codes;
    IntStreamWriter residuals;
    std::string number_literals;
    std::vector<std::int64_t> previous;  // per enforcer context

    void write(std::string& out) const {
        if (number) {
            bytes::put_bytes(out, number_codes);
            residuals.write(out);
            bytes::put_bytes(out, number_literals);
        } else {
            strings.write(out);
        }
    }
};

struct SlotReader {
    bool number = false;
    StringColumnReader strings{kDocumentStringPredictions};
    bytes::Reader number_codes;
    IntStreamReader residuals;
    bytes::Reader number_literals;
    std::vector<std::int64_t> previous;

    bool open(bytes::Reader& block) {
        if (!number) {
            return strings.open(block);
        }
        std::string_view codes, literals;
        if (!block.bytes(codes) || !residuals.open(block) || !block.bytes(literals)) {
            return false;
        }
        number_codes = bytes::Reader(codes);
        number_literals = bytes::Reader(literals);
        return true;
    }
};

struct TemplatePiece {
    std::string_view literal;  // template bytes before the slot
    char slot = 0;             // kStringSlot, kNumberSlot, or 0 after the last slot
};

std::vector<TemplatePiece> split_template(std::string_view text) {
    std::vector<TemplatePiece> pieces;
    std::size_t start = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == kStringSlot || text[i] == kNumberSlot) {
            pieces.push_back(TemplatePiece{text.substr(start, i - start), text[i]});
            start = i + 1;
        }
    }
    pieces.push_back(TemplatePiece{text.substr(start), 0});
    return pieces;
}

template <typename Record>
std::array<std::string_view, 8> column_predictions(const Record& e) {
    return {e.enforcer, e.type, e.workload, e.direction, e.reason, e.src, e.dst, e.protocol};
}

// Workload: most often the same as the last record with the same source (outbound drops) or
// destination (inbound).
struct WorkloadPredictor {
    std::unordered_map<std::string_view, std::string_view> by_src, by_dst;
    std::array<std::string_view, 2> predict(std::string_view src, std::string_view dst) const {
        const auto s = by_src.find(src);
        const auto d = by_dst.find(dst);
        return {s == by_src.end() ? std::string_view() : s->second,
                d == by_dst.end() ? std::string_view() : d->second};
    }
    void learn(std::string_view src, std::string_view dst, std::string_view workload) {
        by_src[src] = workload;
        by_dst[dst] = workload;
    }
};

void put_digits(char*& p, std::uint64_t value, int width) {
    for (int i = width - 1; i >= 0; --i) {
        p[i] = static_cast<char>('0' + value % 10);
        value /= 10;
    }
    p += width;
}

// Writes into `text` (at least 32 bytes) and returns the length; 0 outside years 0000..9999.
std::size_t format_rfc3339_utc(std::int64_t unix_ns, int fraction_digits, char* text) {
    std::int64_t seconds = unix_ns / 1'000'000'000;
    std::int64_t rest = unix_ns % 1'000'000'000;
    if (rest < 0) {
        rest += 1'000'000'000;
        --seconds;
    }
    std::int64_t days = seconds / 86'400;
    std::int64_t second_of_day = seconds % 86'400;
    if (second_of_day < 0) {
        second_of_day += 86'400;
        --days;
    }
    // civil_from_days (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms")
    days += 719'468;
    const std::int64_t era = (days >= 0 ? days : days - 146'096) / 146'097;
    const std::int64_t day_of_era = days - era * 146'097;
    const std::int64_t year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36'524 - day_of_era / 146'096) / 365;
    const std::int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    const std::int64_t mp = (5 * day_of_year + 2) / 153;
    const std::int64_t day = day_of_year - (153 * mp + 2) / 5 + 1;
    const std::int64_t month = mp < 10 ? mp + 3 : mp - 9;
    const std::int64_t year = year_of_era + era * 400 + (month <= 2 ? 1 : 0);
    if (year < 0 || year > 9999) {
        return 0;
    }
    char* p = text;
    put_digits(p, static_cast<std::uint64_t>(year), 4);
    *p++ = '-';
    put_digits(p, static_cast<std::uint64_t>(month), 2);
    *p++ = '-';
    put_digits(p, static_cast<std::uint64_t>(day), 2);
    *p++ = 'T';
    put_digits(p, static_cast<std::uint64_t>(second_of_day / 3600), 2);
    *p++ = ':';
    put_digits(p, static_cast<std::uint64_t>(second_of_day / 60 % 60), 2);
    *p++ = ':';
    put_digits(p, static_cast<std::uint64_t>(second_of_day % 60), 2);
    *p++ = '.';
    if (fraction_digits == 6) {
        put_digits(p, static_cast<std::uint64_t>(rest / 1000), 6);
    } else {
        put_digits(p, static_cast<std::uint64_t>(rest), 9);
    }
    *p++ = 'Z';
    return static_cast<std::size_t>(p - text);
}

}  // namespace

std::string rfc3339_utc(std::int64_t unix_ns, int fraction_digits) {
    char text[40];
    return std::string(text, format_rfc3339_utc(unix_ns, fraction_digits, text));
}

std::string encode_block(std::span<const BlockRecord> records) {
    std::string out;
    bytes::put_varint(out, records.size());

    std::vector<std::string_view> enforcer_names;
    enforcer_names.reserve(records.size());
    for (const auto& r : records) {
        enforcer_names.push_back(r.event->enforcer);
    }
    std::size_t context_count = 0;
    const auto contexts = enforcer_contexts(enforcer_names, context_count);

    auto write_strings = [&](auto member) {
        StringColumnWriter column(0);
        for (const auto& r : records) {
            column.add(member(*r.event));
        }
        column.write(out);
    };
    auto write_context_deltas = [&](auto member) {
        IntStreamWriter column;
        std::vector<std::int64_t> previous(context_count, 0);
        for (std::size_t i = 0; i < records.size(); ++i) {
            const std::int64_t value = member(*records[i].event);
            column.add(minus(value, previous[contexts[i]]));
            previous[contexts[i]] = value;
        }
        column.write(out);
    };

    write_strings([](const StoredEvent& e) -> std::string_view { return e.enforcer; });
    write_context_deltas([](const StoredEvent& e) { return static_cast<std::int64_t>(e.enforcer_seq); });
    write_strings([](const StoredEvent& e) -> std::string_view { return e.type; });
    write_context_deltas([](const StoredEvent& e) { return e.time_ns; });
    write_context_deltas([](const StoredEvent& e) { return e.received_at; });
    write_strings([](const StoredEvent& e) -> std::string_view { return e.direction; });
    write_strings([](const StoredEvent& e) -> std::string_view { return e.reason; });
    write_strings([](const StoredEvent& e) -> std::string_view { return e.protocol; });
    write_strings([](const StoredEvent& e) -> std::string_view { return e.src; });
    write_strings([](const StoredEvent& e) -> std::string_view { return e.dst; });
    {
        StringColumnWriter column(2);
        WorkloadPredictor predictor;
        for (const auto& r : records) {
            const auto& e = *r.event;
            const auto predictions = predictor.predict(e.src, e.dst);
            column.add(e.workload, predictions);
            predictor.learn(e.src, e.dst, e.workload);
        }
        column.write(out);
    }
    {
        IntStreamWriter dports, counts, clock_known, clock_offsets;
        std::string checks;
        for (const auto& r : records) {
            dports.add(r.event->dport ? static_cast<std::int64_t>(*r.event->dport) + 1 : 0);
            counts.add(static_cast<std::int64_t>(r.event->count));
            // The enforcer's clock offset is part of the chained record (one per upload, so
            // it repeats and the deltas and zstd take it to almost nothing).
            clock_known.add(r.event->clock_offset_ms ? 1 : 0);
            clock_offsets.add(r.event->clock_offset_ms.value_or(0));
            bytes::put_le(checks, r.link_check, 2);
        }
        dports.write(out);
        counts.write(out);
        clock_known.write(out);
        clock_offsets.write(out);
        bytes::put_bytes(out, checks);
    }

    // Documents.
    std::unordered_map<std::string, std::uint32_t> template_ids;
    std::vector<std::string> templates;
    std::vector<std::vector<SlotWriter>> slot_writers;
    std::string template_codes, raw_documents;
    std::string template_text;
    std::vector<Slot> slots;
    std::array<std::int64_t, kNumberPredictors> predictions{};
    for (std::size_t i = 0; i < records.size(); ++i) {
        const auto& r = records[i];
        if (!tokenize(r.document, template_text, slots)) {
            bytes::put_varint(template_codes, 0);
            bytes::put_bytes(raw_documents, r.document);
            continue;
        }
        auto found = template_ids.find(template_text);
        if (found == template_ids.end()) {
            found = template_ids.emplace(template_text, static_cast<std::uint32_t>(templates.size())).first;
            templates.push_back(template_text);
            auto& writers = slot_writers.emplace_back(slots.size());
            for (std::size_t s = 0; s < slots.size(); ++s) {
                writers[s].number = slots[s].number;
                writers[s].previous.assign(context_count, 0);
            }
        }
        bytes::put_varint(template_codes, found->second + 1);
        auto& writers = slot_writers[found->second];

        const auto& e = *r.event;
        const auto columns = column_predictions(e);
        std::string time_us, time_ns_text;
        bool time_texts_made = false;
        for (std::size_t s = 0; s < slots.size(); ++s) {
            auto& writer = writers[s];
            const auto text = slots[s].text;
            if (!writer.number) {
                if (!time_texts_made) {
                    time_us = rfc3339_utc(e.time_ns, 6);
                    time_ns_text = rfc3339_utc(e.time_ns, 9);
                    time_texts_made = true;
                }
                const std::array<std::string_view, kDocumentStringPredictions> string_predictions{
                    columns[0], columns[1], columns[2], columns[3], columns[4],
                    columns[5], columns[6], columns[7], time_us,    time_ns_text};
                writer.strings.add(text, string_predictions);
                continue;
            }
            std::int64_t value = 0;
            if (!canonical_integer(text, value)) {
                bytes::put_u8(writer.number_codes, kNumberLiteral);
                bytes::put_bytes(writer.number_literals, text);
                continue;
            }
            auto& previous = writer.previous[contexts[i]];
            number_predictions(e, e.id, previous, predictions);
            std::size_t best = 0;
            std::uint64_t best_cost = bytes::zigzag(minus(value, predictions[0]));
            for (std::size_t p = 1; p < kNumberPredictors && best_cost != 0; ++p) {
                const auto cost = bytes::zigzag(minus(value, predictions[p]));
                if (cost < best_cost) {
                    best = p;
                    best_cost = cost;
                }
            }
            bytes::put_u8(writer.number_codes, static_cast<std::uint8_t>(best));
            writer.residuals.add(minus(value, predictions[best]));
            previous = value;
        }
    }
    std::string table;
    bytes::put_varint(table, templates.size());
    for (const auto& t : templates) {
        bytes::put_bytes(table, t);
    }
    bytes::put_bytes(out, table);
    bytes::put_bytes(out, template_codes);
    bytes::put_bytes(out, raw_documents);
    for (const auto& writers : slot_writers) {
        for (const auto& writer : writers) {
            writer.write(out);
        }
    }
    return out;
}

struct BlockDecoder::Buffers {
    std::vector<evidence::EventRecordFields> records;
    std::vector<std::uint32_t> contexts;
    std::vector<std::string_view> enforcer_names;
    std::vector<std::int64_t> previous;
    std::string document;
};

BlockDecoder::BlockDecoder() : buffers_(std::make_unique<Buffers>()) {}
BlockDecoder::~BlockDecoder() = default;

std::expected<void, std::string> BlockDecoder::decode(std::string_view raw, std::int64_t first_id,
                                                      std::size_t expected_count, const Visitor& visit) {
    auto corrupt = [](std::string_view what) {
        return std::unexpected(std::string("block stream '") + std::string(what) + "' is corrupt");
    };
    bytes::Reader block(raw);
    std::uint64_t count = 0;
    if (!block.varint(count)) {
        return corrupt("record count");
    }
    if (count != expected_count) {
        return std::unexpected("block holds " + std::to_string(count) + " records, the index says " +
                               std::to_string(expected_count));
    }
    auto& records = buffers_->records;
    records.assign(expected_count, evidence::EventRecordFields{});

    // The string columns' dictionaries own the bytes the records' views point into, so they
    // live until the last record has been visited.
    StringColumnReader enforcer_column(0), type_column(0), direction_column(0), reason_column(0),
        protocol_column(0), src_column(0), dst_column(0), workload_column(2);
    auto read_strings = [&](StringColumnReader& column, std::string_view evidence::EventRecordFields::*member) {
        if (!column.open(block)) {
            return false;
        }
        for (auto& r : records) {
            if (!column.next(r.*member)) {
                return false;
            }
        }
        return true;
    };
    auto& contexts = buffers_->contexts;
    std::size_t context_count = 0;
    auto read_context_deltas = [&](std::int64_t evidence::EventRecordFields::*member) {
        IntStreamReader column;
        if (!column.open(block)) {
            return false;
        }
        auto& previous = buffers_->previous;
        previous.assign(context_count, 0);
        for (std::size_t i = 0; i < records.size(); ++i) {
            std::int64_t delta = 0;
            if (!column.next(delta)) {
                return false;
            }
            auto& last = previous[contexts[i]];
            last = plus(last, delta);
            records[i].*member = last;
        }
        return true;
    };

    using Fields = evidence::EventRecordFields;
    if (!read_strings(enforcer_column, &Fields::enforcer)) {
        return corrupt("enforcer");
    }
    {
        auto& names = buffers_->enforcer_names;
        names.clear();
        for (const auto& r : records) {
            names.push_back(r.enforcer);
        }
        contexts = enforcer_contexts(names, context_count);
    }
    if (!read_context_deltas(&Fields::enforcer_seq)) {
        return corrupt("enforcer_seq");
    }
    if (!read_strings(type_column, &Fields::type)) {
        return corrupt("type");
    }
    if (!read_context_deltas(&Fields::time_ns)) {
        return corrupt("time_ns");
    }
    if (!read_context_deltas(&Fields::received_at)) {
        return corrupt("received_at");
    }
    if (!read_strings(direction_column, &Fields::direction)) {
        return corrupt("direction");
    }
    if (!read_strings(reason_column, &Fields::reason)) {
        return corrupt("reason");
    }
    if (!read_strings(protocol_column, &Fields::protocol)) {
        return corrupt("protocol");
    }
    if (!read_strings(src_column, &Fields::src)) {
        return corrupt("src");
    }
    if (!read_strings(dst_column, &Fields::dst)) {
        return corrupt("dst");
    }
    {
        if (!workload_column.open(block)) {
            return corrupt("workload");
        }
        WorkloadPredictor predictor;
        for (auto& r : records) {
            const auto predictions = predictor.predict(r.src, r.dst);
            if (!workload_column.next(
                    [&](std::size_t p) { return p < predictions.size() ? predictions[p] : std::string_view(); },
                    r.workload)) {
                return corrupt("workload");
            }
            predictor.learn(r.src, r.dst, r.workload);
        }
    }
    std::string_view checks;
    {
        IntStreamReader dports, counts;
        if (!dports.open(block) || !counts.open(block)) {
            return corrupt("dport/count");
        }
        for (auto& r : records) {
            std::int64_t dport = 0, event_count = 0;
            if (!dports.next(dport) || !counts.next(event_count) || dport < 0 || dport > 65536) {
                return corrupt("dport/count");
            }
            if (dport > 0) {
                r.dport = dport - 1;
            }
            // The store keeps counts as unsigned; the chain's record writes them as such.
            r.count = static_cast<std::int64_t>(static_cast<std::uint64_t>(event_count));
        }
        IntStreamReader clock_known, clock_offsets;
        if (!clock_known.open(block) || !clock_offsets.open(block)) {
            return corrupt("clock offsets");
        }
        for (auto& r : records) {
            std::int64_t known = 0, offset = 0;
            if (!clock_known.next(known) || !clock_offsets.next(offset) || known < 0 || known > 1) {
                return corrupt("clock offsets");
            }
            if (known == 1) {
                r.clock_offset_ms = offset;
            }
        }
        if (!block.bytes(checks) || checks.size() != 2 * expected_count) {
            return corrupt("link checks");
        }
    }
    auto link_check = [&](std::size_t i) {
        return static_cast<std::uint16_t>(static_cast<std::uint8_t>(checks[2 * i]) |
                                          (static_cast<std::uint8_t>(checks[2 * i + 1]) << 8));
    };

    // Documents.
    std::string_view table_bytes, template_codes_bytes, raw_documents_bytes;
    if (!block.bytes(table_bytes) || !block.bytes(template_codes_bytes) || !block.bytes(raw_documents_bytes)) {
        return corrupt("documents");
    }
    bytes::Reader table(table_bytes);
    std::uint64_t template_count = 0;
    if (!table.varint(template_count) || template_count > table_bytes.size()) {
        return corrupt("templates");
    }
    std::vector<std::vector<TemplatePiece>> templates;
    std::vector<std::vector<SlotReader>> slot_readers(static_cast<std::size_t>(template_count));
    templates.reserve(static_cast<std::size_t>(template_count));
    for (std::uint64_t t = 0; t < template_count; ++t) {
        std::string_view text;
        if (!table.bytes(text)) {
            return corrupt("templates");
        }
        templates.push_back(split_template(text));
    }
    for (std::size_t t = 0; t < templates.size(); ++t) {
        auto& readers = slot_readers[t];
        readers.resize(templates[t].size() - 1);
        for (std::size_t s = 0; s + 1 < templates[t].size(); ++s) {
            readers[s].number = templates[t][s].slot == kNumberSlot;
            readers[s].previous.assign(context_count, 0);
            if (!readers[s].open(block)) {
                return corrupt("document slot");
            }
        }
    }
    if (!block.at_end()) {
        return corrupt("trailing bytes");
    }

    bytes::Reader template_codes(template_codes_bytes);
    bytes::Reader raw_documents(raw_documents_bytes);
    std::array<std::int64_t, kNumberPredictors> predictions{};
    // The record's time as RFC 3339 text, made at most once per record and only when a slot
    // asks for it.
    char time_us[40], time_ns_text[40];
    std::size_t time_us_length = 0, time_ns_length = 0;
    bool time_texts_made = false;
    char number_text[24];
    std::string& doc = buffers_->document;
    for (std::size_t i = 0; i < records.size(); ++i) {
        auto& r = records[i];
        const auto id = plus(first_id, static_cast<std::int64_t>(i));
        std::uint64_t code = 0;
        if (!template_codes.varint(code) || code > templates.size()) {
            return corrupt("template codes");
        }
        if (code == 0) {
            if (!raw_documents.bytes(r.document_text)) {
                return corrupt("raw documents");
            }
            visit(i, r, link_check(i));
            continue;
        }
        const auto& pieces = templates[static_cast<std::size_t>(code - 1)];
        auto& readers = slot_readers[static_cast<std::size_t>(code - 1)];
        const auto columns = column_predictions(r);
        time_texts_made = false;
        auto predict = [&](std::size_t p) -> std::string_view {
            if (p < columns.size()) {
                return columns[p];
            }
            if (!time_texts_made) {
                time_us_length = format_rfc3339_utc(r.time_ns, 6, time_us);
                time_ns_length = format_rfc3339_utc(r.time_ns, 9, time_ns_text);
                time_texts_made = true;
            }
            return p == columns.size() ? std::string_view(time_us, time_us_length)
                                       : std::string_view(time_ns_text, time_ns_length);
        };
        doc.clear();
        for (std::size_t s = 0; s < pieces.size(); ++s) {
            doc.append(pieces[s].literal);
            if (pieces[s].slot == 0) {
                break;
            }
            auto& reader = readers[s];
            if (!reader.number) {
                std::string_view value;
                if (!reader.strings.next(predict, value)) {
                    return corrupt("document string slot");
                }
                doc += '"';
                doc.append(value);
                doc += '"';
                continue;
            }
            std::uint8_t number_code = 0;
            if (!reader.number_codes.u8(number_code) || number_code > kNumberLiteral) {
                return corrupt("document number slot");
            }
            if (number_code == kNumberLiteral) {
                std::string_view literal;
                if (!reader.number_literals.bytes(literal)) {
                    return corrupt("document number literal");
                }
                doc.append(literal);
                continue;
            }
            std::int64_t residual = 0;
            if (!reader.residuals.next(residual)) {
                return corrupt("document number residual");
            }
            auto& previous = reader.previous[contexts[i]];
            number_predictions(r, id, previous, predictions);
            const std::int64_t value = plus(predictions[number_code], residual);
            previous = value;
            const auto end = std::to_chars(number_text, number_text + sizeof number_text, value).ptr;
            doc.append(number_text, end);
        }
        r.document_text = doc;
        visit(i, r, link_check(i));
    }
    return {};
}

controller::StoredEvent stored_event_of(std::int64_t id, const evidence::EventRecordFields& fields) {
    StoredEvent e;
    e.id = id;
    e.enforcer = fields.enforcer;
    e.enforcer_seq = static_cast<std::uint64_t>(fields.enforcer_seq);
    e.type = fields.type;
    e.time_ns = fields.time_ns;
    e.received_at = fields.received_at;
    e.workload = fields.workload;
    e.direction = fields.direction;
    e.reason = fields.reason;
    e.src = fields.src;
    e.dst = fields.dst;
    e.protocol = fields.protocol;
    if (fields.dport) {
        e.dport = static_cast<std::uint16_t>(*fields.dport);
    }
    e.count = static_cast<std::uint64_t>(fields.count);
    e.clock_offset_ms = fields.clock_offset_ms;
    e.document_text = fields.document_text;
    return e;
}

std::expected<DecodedBlock, std::string> decode_block(std::string_view raw, std::int64_t first_id,
                                                      std::size_t expected_count) {
    DecodedBlock decoded;
    decoded.events.resize(expected_count);
    decoded.link_checks.resize(expected_count);
    BlockDecoder decoder;
    auto done = decoder.decode(raw, first_id, expected_count,
                               [&](std::size_t i, const evidence::EventRecordFields& fields, std::uint16_t check) {
                                   decoded.events[i] = stored_event_of(plus(first_id, static_cast<std::int64_t>(i)), fields);
                                   decoded.link_checks[i] = check;
                               });
    if (!done) {
        return std::unexpected(done.error());
    }
    return decoded;
}

}  // namespace bulkhead::archive
